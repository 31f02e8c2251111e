"""The tensors and config of an upcycled MoE, in the names transformers 5 loads natively.

Output architectures (no remote code):

* ``mixtral`` (``MixtralForCausalLM``) from Llama/Mistral bases;
* ``qwen2_moe`` (``Qwen2MoeForCausalLM``) from Qwen2 (attention biases kept) or Llama/Mistral
  bases (``qkv_bias: false``), with its shared expert taken from ``shared_experts`` or, when none
  is given, zeroed so it adds nothing (mergekit requires one).

Everything outside the MLPs is the base's. In layer ``i`` expert ``e``'s weights are the MLP of
layer ``i`` of expert model ``e``, stored fused as transformers holds them:
``mlp.experts.gate_up_proj[e] = [gate_proj; up_proj]`` and ``mlp.experts.down_proj[e] = down_proj``,
and ``mlp.gate.weight`` is the router (one row per expert). With one expert and top-1 routing the
router weight is 1, so the MoE computes exactly what the dense model computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from hf_time.errors import ConfigError
from hf_time.io import TensorInfo
from hf_time.layers import LayerStack

MLP = ("gate_proj", "up_proj", "down_proj")
# Config keys that name the dense architecture (or depend on its layer layout), never copied over.
_NOT_COPIED = {"model_type", "architectures", "transformers_version", "layer_types", "sliding_window",
               "use_sliding_window", "max_window_layers", "auto_map", "mlp_bias"}


def _config_class(arch: str):
    from transformers import MixtralConfig, Qwen2MoeConfig

    return MixtralConfig if arch == "mixtral" else Qwen2MoeConfig


def moe_hf_config(base: Mapping[str, Any], arch: str, num_experts: int, experts_per_token: int,
                  dtype: str | None) -> dict[str, Any]:
    """The output ``config.json``: every base key the MoE architecture also has, plus its MoE keys."""
    cls = _config_class(arch)
    known = set(cls().to_dict())
    kwargs = {k: v for k, v in base.items() if k in known and k not in _NOT_COPIED}
    if arch == "mixtral":
        kwargs.update(num_local_experts=num_experts, num_experts_per_tok=experts_per_token, sliding_window=None)
    else:
        inter = base["intermediate_size"]
        kwargs.update(num_experts=num_experts, num_experts_per_tok=experts_per_token, decoder_sparse_step=1,
                      norm_topk_prob=True, use_sliding_window=False, moe_intermediate_size=inter,
                      shared_expert_intermediate_size=inter, mlp_only_layers=[],
                      qkv_bias=bool(base.get("model_type") == "qwen2"))
    if dtype is not None:
        kwargs["dtype"] = dtype
    out = cls(**kwargs).to_dict()
    out["architectures"] = ["MixtralForCausalLM" if arch == "mixtral" else "Qwen2MoeForCausalLM"]
    out.pop("transformers_version", None)
    return out


@dataclass(frozen=True)
class Piece:
    """One output tensor: its info and how to make it (``make(read)`` with ``read(model, name)``)."""

    info: TensorInfo
    make: Callable[[Callable[[int, str], torch.Tensor]], torch.Tensor]


def _mlp_name(stack: LayerStack, layer: int, proj: str) -> str:
    return f"{stack.prefix}.{layer}.mlp.{proj}.weight"


def pieces(base_infos: Mapping[str, TensorInfo], stack: LayerStack, arch: str, num_experts: int,
           shared: bool, gates: torch.Tensor, shared_gates: torch.Tensor | None, residual_scales: Sequence[float | None],
           out_dtype: torch.dtype) -> list[Piece]:
    """Every tensor of the MoE: the base's outside the MLPs, then per layer the router and experts.

    Models are numbered 0 (the base), 1..E (experts), E+1 (the shared expert).

    Raises:
        ConfigError: a layer without Llama-style ``mlp.{gate,up,down}_proj`` weights.
    """
    from hf_time.io import _TORCH_TO_ST

    code = _TORCH_TO_ST[out_dtype]
    out: list[Piece] = []
    mlp_names = {_mlp_name(stack, i, p) for i in range(stack.num_layers) for p in MLP}
    missing = sorted(mlp_names - set(base_infos))
    if missing:
        raise ConfigError(f"the base has no {missing[0]!r}: MoE upcycling takes Llama/Mistral/Qwen2-style MLPs "
                          "(mlp.gate_proj, mlp.up_proj, mlp.down_proj in every layer)")
    for name, info in base_infos.items():
        if name not in mlp_names:
            out.append(Piece(TensorInfo(name, code if info.is_float else info.dtype, info.shape),
                             lambda read, n=name: read(0, n)))
    for i in range(stack.num_layers):
        gate = base_infos[_mlp_name(stack, i, "gate_proj")]
        inter, hidden = gate.shape
        head = f"{stack.prefix}.{i}.mlp"

        def gate_up(read, i=i):
            return torch.stack([torch.cat([read(e, _mlp_name(stack, i, "gate_proj")),
                                           read(e, _mlp_name(stack, i, "up_proj"))]) for e in range(1, num_experts + 1)])

        def down(read, i=i):
            return torch.stack([_scaled(read(e, _mlp_name(stack, i, "down_proj")), residual_scales[e - 1])
                                for e in range(1, num_experts + 1)])

        out.append(Piece(TensorInfo(f"{head}.gate.weight", code, (num_experts, hidden)), lambda _r, i=i: gates[i]))
        out.append(Piece(TensorInfo(f"{head}.experts.gate_up_proj", code, (num_experts, 2 * inter, hidden)), gate_up))
        out.append(Piece(TensorInfo(f"{head}.experts.down_proj", code, (num_experts, hidden, inter)), down))
        if arch == "qwen2_moe":
            out.extend(_shared_pieces(stack, i, head, code, (inter, hidden), shared, shared_gates,
                                      residual_scales[-1] if shared else None, num_experts + 1))
    return out


def _scaled(t: torch.Tensor, scale: float | None) -> torch.Tensor:
    return t if scale is None else t.float() * scale


def _shared_pieces(stack: LayerStack, i: int, head: str, code: str, shape: tuple[int, int], shared: bool,
                   shared_gates: torch.Tensor | None, scale: float | None, model: int) -> list[Piece]:
    """Qwen2-MoE's shared expert of layer ``i`` and its gate: the shared model's MLP, or zeros (adds nothing)."""
    inter, hidden = shape
    out = []
    for proj, proj_shape in (("gate_proj", (inter, hidden)), ("up_proj", (inter, hidden)), ("down_proj", (hidden, inter))):
        if shared:
            make = (lambda read, p=proj: _scaled(read(model, _mlp_name(stack, i, p)), scale if p == "down_proj" else None))
        else:
            make = (lambda _r, s=proj_shape: torch.zeros(s))
        out.append(Piece(TensorInfo(f"{head}.shared_expert.{proj}.weight", code, proj_shape), make))
    gate = (lambda _r: shared_gates[i]) if shared and shared_gates is not None else (lambda _r: torch.zeros(1, hidden))
    out.append(Piece(TensorInfo(f"{head}.shared_expert_gate.weight", code, (1, hidden)), gate))
    return out
