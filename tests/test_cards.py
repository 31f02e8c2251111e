"""Model cards are compared with golden files (as huggingface_hub tests its cards)."""

from pathlib import Path

from hf_time.cards import render_expert_card, render_merge_card

GOLDEN = Path(__file__).parent / "golden"
SHA_B, SHA_1, SHA_2 = "b" * 40, "1" * 40, "2" * 40
LINEAGE = {
    "method": "ties",
    "summary": "TIES: keep top-density magnitudes, elect signs, average the agreeing entries.",
    "paper": "https://arxiv.org/abs/2306.01708",
    "parameters": {"density": 0.2, "normalize": True, "lambda": 1.0, "threshold_scope": "tensor"},
    "lines": None,
    "base": {"ref": "org/base", "repo_id": "org/base", "revision": None, "sha": SHA_B},
    "experts": [
        {"ref": "org/math@v1", "repo_id": "org/math", "revision": "v1", "sha": SHA_1, "weight": 0.6},
        {"ref": "/data/local-expert", "repo_id": None, "revision": None, "sha": None, "weight": 0.4},
    ],
}
CONFIG = {
    "merge_method": "ties",
    "base_model": f"org/base@{SHA_B}",
    "models": [{"model": f"org/math@{SHA_1}", "parameters": {"weight": 0.6}},
               {"model": "/data/local-expert", "parameters": {"weight": 0.4}}],
    "parameters": {"density": 0.2},
}


def test_merge_card_matches_golden():
    card = render_merge_card(LINEAGE, CONFIG, title="math-code-ties")
    assert card == (GOLDEN / "merge_card.md").read_text()


def test_merge_card_yaml_header():
    from huggingface_hub import ModelCard

    card = ModelCard(render_merge_card(LINEAGE, CONFIG))
    # local experts are not Hub models: they stay out of base_model (the Hub would reject them)
    assert card.data.base_model == ["org/base", "org/math"]
    assert card.data.base_model_relation == "merge"
    assert card.data.tags == ["hf_time", "merge", "ties"]
    assert card.data.library_name == "transformers"


def test_expert_card_matches_golden():
    lineage = {"base": {"ref": f"org/base@{SHA_B}", "repo_id": "org/base", "sha": SHA_B}, "task": "sms_spam",
               "training": {"steps": 60, "learning_rate": 5e-05}, "stats": {"final_loss": 0.12}}
    card = render_expert_card(lineage, title="MiniLM expert: sms_spam")
    assert card == (GOLDEN / "expert_card.md").read_text()
