"""Model cards are compared with golden files (as huggingface_hub tests its cards), rendered from lineages."""

from pathlib import Path

from hf_time.cards import render_expert_card, render_merge_card
from hf_time.lineage import ExpertRecord, Lineage, MethodRecord, OutputRecord, RefRecord

GOLDEN = Path(__file__).parent / "golden"
SHA_B, SHA_1, SHA_2 = "b" * 40, "1" * 40, "2" * 40
LINEAGE = Lineage(
    kind="merge",
    method=MethodRecord(
        "ties", "dense", "TIES: keep top-density magnitudes, elect signs, average the agreeing entries.",
        "https://arxiv.org/abs/2306.01708", {"density": 0.2, "normalize": True, "lambda": 1.0, "threshold_scope": "tensor"}),
    base=RefRecord("org/base", "org/base", None, SHA_B),
    experts=(ExpertRecord("org/math@v1", "org/math", "v1", SHA_1, weight=0.6),
             ExpertRecord("/data/local-expert", weight=0.4)),
    output=OutputRecord("model", {"model.safetensors": "0" * 64}),
)


def test_merge_card_matches_golden():
    card = render_merge_card(LINEAGE, title="math-code-ties")
    assert card == (GOLDEN / "merge_card.md").read_text()


def test_merge_card_yaml_header():
    from huggingface_hub import ModelCard

    card = ModelCard(render_merge_card(LINEAGE))
    # local experts are not Hub models: they stay out of base_model (the Hub would reject them)
    assert card.data.base_model == ["org/base", "org/math"]
    assert card.data.base_model_relation == "merge"
    assert card.data.tags == ["hf_time", "merge", "ties"]
    assert card.data.library_name == "transformers"


def test_merge_card_of_pinned_and_local_inputs_says_which():
    text = render_merge_card(LINEAGE)
    assert "local inputs are recorded by their folder" in text and "reproduced exactly" not in text
    pinned = Lineage(kind="merge", method=LINEAGE.method, base=LINEAGE.base, experts=LINEAGE.experts[:1],
                     output=LINEAGE.output)
    assert "Every input is pinned to the commit it was read at" in render_merge_card(pinned)


def test_expert_card_matches_golden():
    lineage = Lineage(kind="train", base=RefRecord(f"org/base@{SHA_B}", "org/base", None, SHA_B),
                      details={"task": "sms_spam", "training": {"steps": 60, "learning_rate": 5e-05},
                               "stats": {"final_loss": 0.12}},
                      output=OutputRecord("model", {"model.safetensors": "0" * 64}))
    card = render_expert_card(lineage, title="MiniLM expert: sms_spam")
    assert card == (GOLDEN / "expert_card.md").read_text()


def test_recorded_evaluation_goes_into_the_model_index(tmp_path):
    from huggingface_hub import ModelCard
    from tiny import save_tiny_llama

    from hf_time.api import merge
    from hf_time.pipeline import record_evaluation

    base = save_tiny_llama(tmp_path / "base", 0)
    res = merge(str(base), [str(save_tiny_llama(tmp_path / "e1", 1, base=base))], "ties", out=tmp_path / "m",
                progress=False)
    lineage = record_evaluation(res.out_dir, [{"task": "sms_spam", "metric": "accuracy", "value": 0.91, "split": "test"},
                                              {"task": "trec_qtype", "metric": "accuracy", "value": 0.5}], title="m")
    assert [(e["task"], e["value"]) for e in lineage.evaluation] == [("sms_spam", 0.91), ("trec_qtype", 0.5)]
    card = ModelCard.load(res.out_dir / "README.md")
    assert {(r.dataset_name, r.metric_value) for r in card.data.eval_results} == {("sms_spam", 0.91), ("trec_qtype", 0.5)}
    assert "| sms_spam | accuracy | 0.9100 |" in card.text
    assert Lineage.load(res.out_dir) == lineage  # the lineage and the card say the same
    again = record_evaluation(res.out_dir, [{"task": "sms_spam", "metric": "accuracy", "value": 0.93}], title="m")
    assert [(e["task"], e["value"]) for e in again.evaluation] == [("trec_qtype", 0.5), ("sms_spam", 0.93)]


def test_no_card_tells_people_to_pip_install_hf_time_from_pypi():
    """Issue 10.6: `pip install hf_time` does not resolve (hf_time is not on PyPI); cards say how to install it."""
    import re

    templates = sorted((Path(__file__).parents[1] / "model_cards").glob("*.md"))
    assert templates
    for path in templates:
        text = path.read_text()
        assert not re.search(r"pip install ['\"]?hf_time", text), path.name  # a PyPI name that does not exist
        if "hf_time" in text and "pip install" in text:
            assert "pip install ./hf_time" in text or "./hf_time[plot]" in text, path.name


def test_card_of_a_local_merge_shows_no_absolute_path_and_claims_no_pinning(tmp_path):
    """Issue 10.7: cards of local merges embedded absolute local paths and claimed every input was pinned."""
    from tiny import save_tiny_llama

    from hf_time.api import merge

    base = save_tiny_llama(tmp_path / "base", 0)
    res = merge(str(base.absolute()), [str(save_tiny_llama(tmp_path / "my-expert", 1, base=base).absolute())], "ties",
                out=tmp_path / "m", progress=False)
    card = (res.out_dir / "README.md").read_text()
    assert str(tmp_path) not in card and "my-expert" in card
    assert "Every input is pinned" not in card and "local inputs are recorded by their folder" in card
    assert str(tmp_path / "my-expert") in (res.out_dir / "merge_config.yaml").read_text()  # full paths stay here


def test_cards_render_exactly_as_model_card_from_template(monkeypatch):
    """render_template compiles each template once per process; the cards must stay what huggingface_hub's
    ModelCard.from_template renders from the same template and values (the goldens above pin the text)."""
    from huggingface_hub import ModelCard

    from hf_time import cards

    fast = [render_merge_card(LINEAGE, title="t"), render_merge_card(LINEAGE, title="t")]  # compiled, then cached
    monkeypatch.setattr(cards, "render_template", lambda name, data, **kw: ModelCard.from_template(
        data, template_str=cards.template_text(name), **kw))
    assert fast == [render_merge_card(LINEAGE, title="t")] * 2
