"""Layer stacks found from tensor names (hf_time.layers) and vocabulary alignment (hf_time.vocab), by hand."""

import pytest
import torch

from hf_time.errors import ConfigError
from hf_time.layers import LayerStack, find_stack, split_outside, stacked_config
from hf_time.vocab import MISSING, align, permutation


def _names(prefix, n, parts=("attn.w", "mlp.w")):
    return [f"{prefix}.{i}.{p}" for i in range(n) for p in parts]


@pytest.mark.parametrize("prefix, key", [("model.layers", "num_hidden_layers"), ("transformer.h", "n_layer"),
                                         ("gpt_neox.layers", "num_hidden_layers"), ("model.decoder.blocks", "num_layers")])
def test_the_stack_is_found_from_names_and_the_declared_count(prefix, key):
    names = ["embed.weight", *_names(prefix, 3), "norm.weight"]
    stack = find_stack(names, {key: 3})
    assert stack == LayerStack(prefix, 3, key)
    assert stack.index(f"{prefix}.2.mlp.w") == 2 and stack.index("norm.weight") is None
    assert stack.rename(f"{prefix}.2.mlp.w", 7) == f"{prefix}.7.mlp.w"


def test_experts_inside_a_layer_are_not_mistaken_for_the_stack():
    # 2 layers holding 2 experts each: the expert lists are as long as the stack but nested in it
    names = [f"model.layers.{i}.mlp.experts.{e}.w" for i in range(2) for e in range(2)] + _names("model.layers", 2)
    assert find_stack(names, {"num_hidden_layers": 2}).prefix == "model.layers"


def test_no_stack_and_two_stacks_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"cannot find the stack of layers of 4 layers \(config `num_hidden_layers`\)"):
        find_stack(_names("model.layers", 3), {"num_hidden_layers": 4}, "org/m")
    with pytest.raises(ConfigError, match="has several stacks of layers"):
        find_stack(_names("encoder.layer", 2) + _names("decoder.layer", 2), {"num_layers": 2}, "org/t5")


def test_tensors_outside_the_stack_are_placed_by_the_architectures_order_or_by_name():
    names = ["lm_head.weight", "model.embed_tokens.weight", *_names("model.layers", 2), "model.norm.weight"]
    stack = find_stack(names, {"num_hidden_layers": 2})
    order = ["model.embed_tokens.weight", "model.layers.0.attn.w", "model.layers.0.mlp.w", "model.norm.weight",
             "lm_head.weight"]
    assert split_outside(names, stack, order) == ({"model.embed_tokens.weight"}, {"model.norm.weight", "lm_head.weight"})
    # without the architecture (it cannot be built), embeddings go first by name, the rest after
    assert split_outside(names, stack, None) == ({"model.embed_tokens.weight"}, {"model.norm.weight", "lm_head.weight"})


def test_a_stacked_config_keeps_each_layers_per_layer_settings():
    a = {"num_hidden_layers": 3, "layer_types": ["s", "f", "s"], "hidden_size": 8}
    b = {"num_hidden_layers": 2, "layer_types": ["x", "y"]}
    out = stacked_config(a, LayerStack("model.layers", 3, "num_hidden_layers"), [(a, 0), (a, 1), (b, 1), (a, 2)])
    assert out == {"num_hidden_layers": 4, "layer_types": ["s", "f", "y", "s"], "hidden_size": 8}


def test_permutation_maps_output_ids_to_model_ids_and_rows_beyond_vocab_size_count_as_missing():
    out = {"a": 0, "b": 1, "c": 2, "d": 3}
    assert permutation(out, {"c": 0, "a": 1, "d": 5}, vocab_size=4) == [1, MISSING, 0, MISSING]


def test_align_gives_each_missing_token_the_donors_row_the_bases_row_or_the_mean():
    # output vocabulary a, b, c, d; rows are [id*10 + model]
    base = torch.tensor([[0.0], [10.0], [20.0]])  # knows a, b, c
    m1 = torch.tensor([[1.0], [31.0]])  # knows a, d
    m2 = torch.tensor([[32.0], [12.0]])  # knows d, b
    perms = [[0, 1, 2, MISSING], [0, MISSING, MISSING, 1], [MISSING, 1, MISSING, 0]]
    a0, a1, a2 = align([base, m1, m2], perms, base=0)
    assert a0.flatten().tolist() == [0.0, 10.0, 20.0, 31.5]  # d: unknown to the base, mean of m1 and m2
    assert a1.flatten().tolist() == [1.0, 10.0, 20.0, 31.0]  # b: the base's row; c: only the base knows it
    assert a2.flatten().tolist() == [0.0, 12.0, 20.0, 32.0]  # a: the base's row
    (only,) = align([m1], [[0, MISSING, MISSING, 1]])
    assert only.flatten().tolist() == [1.0, 0.0, 0.0, 31.0]  # tokens no model knows are zeros


def test_align_refuses_tensors_that_differ_beyond_the_vocabulary_axis():
    with pytest.raises(ValueError, match="differ beyond the vocabulary axis"):
        align([torch.zeros(2, 3), torch.zeros(2, 4)], [[0, 1], [0, 1]])
