"""Permutation alignment, pure layer: specs, function-preserving permutations, linear assignment, weight and
activation matching on tiny models built in-process (a BERT encoder and a Llama decoder with GQA)."""

from __future__ import annotations

import pytest
import torch

from hf_time.align.activation_matching import activation_matching
from hf_time.align.activations import matching_points, moments
from hf_time.align.assign import HeadCosts, assign, solve_heads
from hf_time.align.config import MatchingConfig
from hf_time.align.perms import Alignment, HeadPerm, inverse, permute_tensor, random_alignment
from hf_time.align.spec import HeadLayout, arch_spec
from hf_time.align.weight_matching import apply_alignment, weight_matching
from hf_time.errors import UnsupportedArchitectureError
from hf_time.io import _TORCH_TO_ST, TensorInfo


class Tensors(dict):
    """A state dict as a tensor source."""

    def get(self, name):  # noqa: D102 - dict.get with the TensorSource signature
        return self[name]


def infos(sd):
    return {k: TensorInfo(k, _TORCH_TO_ST[v.dtype], tuple(v.shape)) for k, v in sd.items()}


def tiny(kind: str, seed: int = 0):
    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if kind == "bert":
        model = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                                           vocab_size=90, max_position_embeddings=32))
    else:  # GQA: 4 query heads in 2 groups; untied embeddings, or the LM head tied to them ("llama-tied")
        model = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=48,
                                             num_attention_heads=4, num_key_value_heads=2, vocab_size=90,
                                             tie_word_embeddings=kind == "llama-tied"))
    model.eval()
    sd = Tensors({k: v.detach().clone() for k, v in model.state_dict().items()})
    if model.config.tie_word_embeddings and "lm_head.weight" in sd:  # a checkpoint stores a tied head once
        sd.pop("lm_head.weight")
    cfg = dict(model.config.to_dict(), architectures=[type(model).__name__])
    return model, sd, arch_spec(cfg, infos(sd))


def rebuilt(model, sd):
    other = type(model)(model.config)
    missing, unexpected = other.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    other.tie_weights()
    return other.eval()


def outputs(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("kind", ["bert", "llama", "llama-tied"])
def test_a_random_permutation_keeps_the_function(kind):
    model, sd, spec = tiny(kind)
    planted = random_alignment(spec, seed=3)
    ids = torch.randint(0, 90, (2, 9))
    permuted = rebuilt(model, apply_alignment(spec, sd, planted))
    assert not torch.equal(permuted.state_dict()[next(n for n in sd if "layers.0" in n or "layer.0" in n)],
                           sd[next(n for n in sd if "layers.0" in n or "layer.0" in n)])
    torch.testing.assert_close(outputs(permuted, ids), outputs(model, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "llama", "llama-tied"])
@pytest.mark.parametrize("sketch", [None, 16])
def test_weight_matching_undoes_a_planted_permutation(kind, sketch):
    _, sd, spec = tiny(kind)
    planted = random_alignment(spec, seed=5)
    expert = Tensors(apply_alignment(spec, sd, planted))
    result = weight_matching(spec, sd, expert, MatchingConfig(sketch=sketch), progress=False)
    assert result.alignment.equal(inverse(planted))
    assert result.converged and result.passes == 1
    back = apply_alignment(spec, expert, result.alignment)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    if sketch is None:
        assert result.similarity_before < 0.99 and result.similarity_after == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_activation_matching_undoes_a_planted_permutation(kind):
    model, sd, spec = tiny(kind)
    planted = random_alignment(spec, seed=7)
    expert = rebuilt(model, apply_alignment(spec, sd, planted))
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 90, (4, 12), generator=g),
                "attention_mask": torch.ones(4, 12, dtype=torch.long)} for _ in range(3)]
    stats = moments((model, expert), batches, matching_points(spec))
    assert activation_matching(spec, stats).alignment.equal(inverse(planted))


def test_weight_matching_of_two_inits_raises_similarity_and_is_a_fixed_point():
    _, sd, spec = tiny("bert", seed=0)
    _, other, _ = tiny("bert", seed=1)
    result = weight_matching(spec, sd, other, progress=False)
    assert result.converged and result.similarity_after > result.similarity_before
    again = weight_matching(spec, sd, Tensors(apply_alignment(spec, other, result.alignment)), progress=False)
    assert again.alignment.equal(Alignment.identity(spec))
    assert again.similarity_before == pytest.approx(result.similarity_after, abs=1e-6)


def test_assign_takes_each_rows_maximum_when_they_differ_and_solves_otherwise():
    distinct = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.1], [0.0, 0.3, 0.4]])
    assert assign(distinct).tolist() == [1, 0, 2]
    # both rows prefer column 0; the optimum gives it to row 1 (0.9 + 0.5 > 1.0 + 0.1)
    clash = torch.tensor([[1.0, 0.5], [0.9, 0.1]])
    assert assign(clash).tolist() == [1, 0]


def test_head_perm_indices_move_whole_gqa_groups_and_shared_dims():
    layout = HeadLayout(heads=4, kv_heads=2, head_dim=2, qk_free=False)
    perm = HeadPerm(groups=torch.tensor([1, 0]), queries=torch.tensor([[1, 0], [0, 1]]),
                    qk_dims=torch.tensor([[0, 1], [0, 1]]), vo_dims=torch.tensor([[1, 0], [0, 1]]))
    idx = perm.indices(layout)
    # reference head 0 (group 0, query 0) <- expert group 1, query 1 = expert head 3 -> q rows 6, 7
    assert idx["q"].tolist() == [6, 7, 4, 5, 0, 1, 2, 3]
    assert idx["k"].tolist() == [2, 3, 0, 1]
    assert idx["v"].tolist() == [3, 2, 0, 1]  # group 0's value dims swapped
    assert idx["o"].tolist() == [7, 6, 5, 4, 0, 1, 2, 3]  # o follows its query head and its group's value dims


def test_solve_heads_pairs_groups_then_queries_then_dims():
    layout = HeadLayout(heads=4, kv_heads=2, head_dim=2, qk_free=False)
    pair = torch.zeros(4, 4)
    pair[0, 3], pair[1, 2], pair[2, 0], pair[3, 1] = 1.0, 1.0, 1.0, 1.0  # groups swap, queries swap in group 0
    eye = torch.eye(2)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    vo_kv = torch.stack([torch.stack([eye, swap]), torch.stack([eye, eye])])  # group 0 <-> 1 prefers swapped dims
    vo_q = torch.zeros(4, 4, 2, 2)
    perm = solve_heads(HeadCosts(pair, None, None, vo_q, vo_kv), layout)
    assert perm.groups.tolist() == [1, 0]
    assert perm.queries.tolist() == [[1, 0], [0, 1]]
    assert perm.vo_dims.tolist() == [[1, 0], [0, 1]]
    assert perm.qk_dims.tolist() == [[0, 1], [0, 1]]  # RoPE: untouched


def test_alignment_round_trips_through_its_compact_form():
    _, _, spec = tiny("llama")
    planted = random_alignment(spec, seed=11)
    back = Alignment.from_tensors(planted.to_tensors(), spec.layers)
    assert back.equal(planted) and back.digest() == planted.digest()
    assert Alignment.identity(spec).moved() == {"residual": 0.0, "mlp": 0.0, "heads": 0.0, "head_dims": 0.0}


def test_permute_tensor_leaves_the_input_alone():
    _, sd, spec = tiny("bert")
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    before = sd[name].clone()
    out = permute_tensor(sd[name], spec.tensors[name], {"mlp.0": torch.arange(48).flip(0), "res": torch.arange(32)})
    assert torch.equal(sd[name], before) and torch.equal(out, before.flip(0))


def test_unsupported_architectures_are_refused_with_the_reason():
    with pytest.raises(UnsupportedArchitectureError, match="model_type 'gpt2'.*BERT-like encoders"):
        arch_spec({"model_type": "gpt2"}, {})
    _, sd, _ = tiny("bert")
    cfg = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 32, "num_attention_heads": 4,
           "num_hidden_layers": 2, "intermediate_size": 48}
    with pytest.raises(UnsupportedArchitectureError, match="relative position"):
        arch_spec({**cfg, "position_embedding_type": "relative_key"}, infos(sd))
    with pytest.raises(UnsupportedArchitectureError, match="'bert.adapter.weight'"):
        arch_spec(cfg, {**infos(sd), "bert.adapter.weight": TensorInfo("bert.adapter.weight", "F32", (4, 4))})
    with pytest.raises(UnsupportedArchitectureError, match="BertForQuestionAnswering"):
        arch_spec({**cfg, "architectures": ["BertForQuestionAnswering"]}, infos(sd))
