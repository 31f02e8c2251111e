"""Scoring causal LMs on causal-LM tasks against log-likelihoods computed by hand on a tiny Llama."""

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, BertModel

from hf_time import lm_evaluation
from hf_time.errors import IncompatibleTaskError
from hf_time.evaluation import evaluate_results, evaluate_tasks
from hf_time.lm_evaluation import classification_scores, evaluate_lm_task, greedy_answers, normalize_answer
from hf_time.lm_encoding import encode_examples
from hf_time.lm_task_types import InstructionTask, LMExample, PromptClassificationTask, PromptFormat
from hf_time.tasks import TextTask
from tiny_lm import save_tiny_causal_lm, tiny_tokenizer

TEXTS = ["the film was great", "the film was bad and dull", "what colour is the sky", "hello world"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory, tok):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("eval") / "lm", tok, seed=3)


@pytest.fixture(scope="module")
def lm(lm_dir):
    return AutoModelForCausalLM.from_pretrained(lm_dir).eval()


def _hand_logprob(model, tok, prompt, completion):
    """Summed log-probability of the completion's tokens after the prompt, from one unpadded pass."""
    p = tok(prompt, add_special_tokens=False).input_ids
    c = tok(completion, add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([p + c])).logits[0].log_softmax(-1)
    return sum(float(logp[len(p) + i - 1, t]) for i, t in enumerate(c)), len(c)


def _task(verbalizers):
    data = datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1, 1, 0]})
    return PromptClassificationTask("t", data, data, ("a", "b"), PromptFormat("Review: {text}. Answer:", verbalizers))


@pytest.mark.parametrize("verbalizers", [("yes", "no"), ("fruit", "apple banana")], ids=["one-token", "multi-token"])
def test_classification_scores_are_length_normalised_log_likelihoods(lm, tok, verbalizers, monkeypatch):
    task = _task(verbalizers)
    one_token = verbalizers[0] == "yes"
    assert [len(tok(" " + v, add_special_tokens=False).input_ids) for v in verbalizers] == ([1, 1] if one_token else [1, 4])
    if one_token:  # one pass per prompt must score every label: the per-sequence path is not used
        monkeypatch.setattr(lm_evaluation, "completion_logprobs", lambda *a, **k: pytest.fail("per-sequence path used"))
    scores, truncated = classification_scores(lm, tok, task, max_length=64, batch_size=3)
    expected = torch.tensor([[s / n for s, n in (_hand_logprob(lm, tok, f"Review: {t}. Answer:", " " + v) for v in verbalizers)]
                             for t in TEXTS])
    assert truncated == 0
    assert torch.allclose(scores, expected, atol=1e-5)
    result = evaluate_lm_task(lm, tok, task, max_length=64)
    assert result.accuracy == pytest.approx(float((expected.argmax(-1) == torch.tensor([0, 1, 1, 0])).float().mean()))
    assert result.mean_logprob == pytest.approx(float(expected[[0, 1, 2, 3], [0, 1, 1, 0]].mean()), abs=1e-5)


def test_truncated_test_examples_are_counted(lm, tok):
    result = evaluate_lm_task(lm, tok, _task(("yes", "no")), max_length=6)
    fits = [len(tok(f"Review: {t}. Answer: yes", add_special_tokens=False).input_ids) <= 6 for t in TEXTS]
    assert result.truncated == fits.count(False) > 0


def test_instruction_mean_log_likelihood_includes_eos(lm, tok):
    data = datasets.Dataset.from_dict({"prompt": ["Question: what is two plus two? Answer:", "hello"],
                                       "completion": [" four", " world"]})
    result = evaluate_lm_task(lm, tok, InstructionTask("qa", data, data), max_length=64)
    expected = [(s, n) for s, n in (_hand_logprob(lm, tok, p, c + "</s>") for p, c in zip(data["prompt"], data["completion"]))]
    mean = sum(s / n for s, n in expected) / 2
    assert result.metric == "token_likelihood" and result.mean_logprob == pytest.approx(mean, abs=1e-5)
    assert result.score == pytest.approx(float(torch.tensor(mean).exp()), abs=1e-6) and result.exact_match is None


def _greedy_alone(model, ids, n):
    """Greedy decoding of one unpadded prompt, token by token, without a cache."""
    ids = list(ids)
    for _ in range(n):
        with torch.no_grad():
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-n:]


def test_batched_greedy_answers_equal_greedy_decoding_of_each_prompt_alone(lm, tok, monkeypatch):
    monkeypatch.setattr(lm.generation_config, "eos_token_id", None)  # decode the full budget: compare all tokens
    examples = [LMExample(p, " x", "completion") for p in ("hello", "Question: what colour is the sky? Answer:", "apple")]
    encoded = encode_examples(examples, tok, 64)
    answers = greedy_answers(lm, tok, encoded, max_new_tokens=4, batch_size=3)
    for e, answer in zip(encoded, answers):
        assert answer == tok.decode(_greedy_alone(lm, e.input_ids[: e.n_prompt], 4), skip_special_tokens=True)


def test_exact_match_scores_greedy_answers_against_the_reference(lm, tok, monkeypatch):
    monkeypatch.setattr(lm.generation_config, "eos_token_id", None)
    prompts = ["hello", "Question: what colour is the sky? Answer:"]
    greedy = [greedy_answers(lm, tok, encode_examples([LMExample(p, " x")], tok, 64), max_new_tokens=3)[0] for p in prompts]
    assert normalize_answer(greedy[0]) and normalize_answer(greedy[0]) != "not this"
    data = datasets.Dataset.from_dict({"prompt": prompts, "completion": [greedy[0].upper() + " .", "not this"]})
    result = evaluate_lm_task(lm, tok, InstructionTask("qa", data, data, short_answer=True, max_new_tokens=3), max_length=64)
    assert result.metric == "exact_match" and result.exact_match == result.score == 0.5


def test_normalize_answer():
    assert normalize_answer("  Paris.\n") == normalize_answer("paris") == "paris"
    assert normalize_answer('"New   York"') == "new york" and normalize_answer("4") != normalize_answer("four")


def test_evaluate_tasks_mixes_task_kinds_on_a_causal_lm(lm_dir, tok):
    text = TextTask("text", datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1, 1, 0]}),
                    datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1, 1, 0]}), ("a", "b"), ("good", "bad"))
    chat = datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]]})
    tasks = [text, _task(("yes", "no")), InstructionTask("chat", chat, chat)]
    results = evaluate_results(lm_dir, tasks, max_length=64, device="cpu")
    assert [r.metric for r in results.values()] == ["accuracy", "accuracy", "token_likelihood"]
    assert evaluate_tasks(lm_dir, tasks, max_length=64, device="cpu") == {n: r.score for n, r in results.items()}


def test_generation_tasks_on_an_encoder_are_refused(tmp_path, tok):
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=len(tok))).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    with pytest.raises(IncompatibleTaskError, match=r"tasks \['t'\] are generation tasks but .* holds BertModel"):
        evaluate_tasks(tmp_path / "bert", [_task(("yes", "no"))], device="cpu")
