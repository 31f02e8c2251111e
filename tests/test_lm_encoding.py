"""Tokenizing causal-LM examples: the loss mask covers exactly the completion, left truncation, padding."""

import pytest
import torch

from hf_time.errors import IncompatibleTaskError
from hf_time.lm_encoding import IGNORE, Encoded, completion_nll, encode_examples, fit, pad_left, render_chat
from hf_time.lm_task_types import LMExample
from tiny_lm import save_tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_fit_keeps_short_examples_whole():
    assert fit([1, 2, 3], [7, 8], 5) == Encoded((1, 2, 3, 7, 8), 2, False)


def test_fit_drops_prompt_tokens_from_the_left_after_the_kept_prefix():
    # BOS (1) stays, the prompt's beginning (10, 11) goes, its end and the whole completion stay.
    assert fit([1, 10, 11, 12, 13], [20, 21], 5, keep_prefix=1) == Encoded((1, 12, 13, 20, 21), 2, True)
    assert fit([10, 11, 12, 13], [20, 21], 4) == Encoded((12, 13, 20, 21), 2, True)


def test_fit_cuts_a_completion_that_alone_does_not_fit_and_keeps_one_prompt_token():
    assert fit([1, 10, 11], [20, 21, 22, 23], 3, keep_prefix=1) == Encoded((11, 20, 21), 2, True)


def test_fit_with_an_empty_prompt_makes_the_first_token_context():
    assert fit([], [5, 6, 7], 8) == Encoded((5, 6, 7), 2, False)


def test_completion_tokens_are_exactly_the_tokenized_completion(tok):
    examples = [LMExample("Review: the film was great. Answer:", " positive", "classification"),
                LMExample("Question: what is two plus two? Answer:", " four", "completion")]
    cls, sft = encode_examples(examples, tok, max_length=64)
    p0, c0 = tok(examples[0].prompt, add_special_tokens=False).input_ids, tok(" positive", add_special_tokens=False).input_ids
    assert cls.input_ids == tuple(p0 + c0) and cls.n_completion == len(c0) and not cls.truncated
    p1, c1 = tok(examples[1].prompt, add_special_tokens=False).input_ids, tok(" four", add_special_tokens=False).input_ids
    # Completion examples end with EOS so the model learns to stop; classification ones do not.
    assert sft.input_ids == tuple(p1 + c1 + [tok.eos_token_id]) and sft.n_completion == len(c1) + 1


def test_left_truncation_keeps_bos_the_question_and_the_completion():
    tok = tiny_tokenizer(bos=True)
    prompt = "Review: the film was great and fun and the film was great. Answer:"
    (enc,) = encode_examples([LMExample(prompt, " positive", "classification")], tok, max_length=8)
    completion = tok(" positive", add_special_tokens=False).input_ids
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    assert enc.truncated and len(enc.input_ids) == 8
    assert enc.input_ids[0] == tok.bos_token_id
    assert list(enc.input_ids[-len(completion):]) == completion
    assert list(enc.input_ids[1:-len(completion)]) == prompt_ids[-(7 - len(completion)):]


def test_chat_is_rendered_by_the_template_and_the_answer_turn_is_the_completion(tok):
    messages = (("user", "what is two plus two?"), ("assistant", "four"))
    prompt, completion = render_chat(tok, messages)
    assert prompt == "<|im_start|>user\nwhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    assert completion == "four<|im_end|>\n"
    (enc,) = encode_examples([LMExample("", "four", "chat", messages)], tok, max_length=64)
    assert list(enc.input_ids[-enc.n_completion:]) == tok(completion, add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(enc.input_ids[-2]) == "<|im_end|>"


def test_chat_without_a_chat_template_is_a_one_line_error():
    tok = tiny_tokenizer(chat_template=False)
    with pytest.raises(IncompatibleTaskError, match="no chat template") as err:
        encode_examples([LMExample("", "four", "chat", (("user", "hi"), ("assistant", "four")), "qa")], tok, 32)
    assert "\n" not in str(err.value) and "'qa'" in str(err.value)


def test_pad_left_targets_are_the_completion_tokens_at_the_positions_that_predict_them():
    batch = pad_left([Encoded((1, 2, 3, 4), 2, False), Encoded((5, 6), 1, False)], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [0, 0, 5, 6]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]
    assert batch["shift_labels"].tolist() == [[IGNORE, 3, 4, IGNORE], [IGNORE, IGNORE, 6, IGNORE]]


def _hand_nll(model, ids, n_completion):
    """Completion NLL of one unpadded sequence from the full logits: log-softmax, pick, negate."""
    logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return [-float(logp[j - 1, ids[j]]) for j in range(len(ids) - n_completion, len(ids))]


@pytest.mark.parametrize("keep_last", [True, False])
def test_completion_nll_of_a_left_padded_batch_equals_each_sequence_alone(tmp_path, tok, keep_last):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(save_tiny_causal_lm(tmp_path / "m", tok)).eval()
    encoded = [Encoded((5, 9, 17, 33, 40, 41), 2, False), Encoded((7, 8, 50), 1, False), Encoded((60, 61, 62, 63), 3, False)]
    with torch.no_grad():
        nll = completion_nll(model, pad_left(encoded, pad_id=tok.pad_token_id), keep_last=keep_last)
        for row, e in enumerate(encoded):
            expected = _hand_nll(model, list(e.input_ids), e.n_completion)
            got = nll[row][nll[row] != 0].tolist()
            assert got == pytest.approx(expected, abs=1e-5)
    assert nll.shape == (3, 4)  # only the last max completion + 1 positions
