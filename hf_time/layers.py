"""Where a checkpoint keeps its stack of transformer layers, found from its tensor names and config.

Slices, layer stacking (passthrough) and gradients need three facts about a model that differ from
one architecture to the next: the name prefix of its numbered layer list (``model.layers`` for
Llama/Mistral/Qwen2/Gemma, ``transformer.h`` for GPT-2, ``gpt_neox.layers``...), how many layers
it has, and which of the tensors outside that list come before it (embeddings) and which after it
(final norm, head). None of them is looked up in a table of known architectures:

* the prefix is the numbered list in the tensor names whose indices are exactly 0..N−1, with N the
  layer count the config declares (the outermost such list, so MoE experts inside a layer are not
  mistaken for it);
* before/after comes from the order in which the architecture registers its parameters
  (transformers instantiated on the meta device, no memory), with a name rule as the fallback.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from hf_time.errors import ConfigError

logger = logging.getLogger(__name__)

# Config keys holding the layer count, in the order transformers' configs use them.
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_PRE_NAME = re.compile(r"(^|\.)(embed_tokens|embed_in|embeddings?|word_embeddings\w*|wte|wpe|tok_embeddings)(\.|$)")


@dataclass(frozen=True)
class LayerStack:
    """The numbered layer list of a checkpoint.

    Attributes:
        prefix: the names' prefix up to the index (``model.layers``).
        num_layers: how many layers it holds.
        count_key: the config key holding that count (None when the config has none).
    """

    prefix: str
    num_layers: int
    count_key: str | None = None

    def index(self, name: str) -> int | None:
        """The layer index of tensor ``name``, or None when it lies outside the stack."""
        head = self.prefix + "."
        if not name.startswith(head):
            return None
        number, dot, _ = name[len(head):].partition(".")
        return int(number) if dot and number.isdigit() else None

    def rename(self, name: str, index: int) -> str:
        """``name`` (a tensor of some layer) moved to layer ``index``."""
        head = self.prefix + "."
        _, dot, rest = name[len(head):].partition(".")
        return f"{head}{index}.{rest}"


def layer_count(hf_config: Mapping[str, Any] | None) -> tuple[int | None, str | None]:
    """The layer count a config declares and its key (None, None when it declares none)."""
    for key in LAYER_COUNT_KEYS:
        value = (hf_config or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, key
    return None, None


def find_stack(names: Iterable[str], hf_config: Mapping[str, Any] | None, what: str = "the model") -> LayerStack:
    """The layer stack of a checkpoint with tensors ``names`` and config ``hf_config``.

    Raises:
        ConfigError: no numbered list of the declared length, or several at the same depth.
    """
    found: dict[str, set[int]] = {}
    for name in names:
        parts = name.split(".")
        for i, part in enumerate(parts[:-1]):
            if part.isdigit() and i > 0:
                found.setdefault(".".join(parts[:i]), set()).add(int(part))
    count, key = layer_count(hf_config)
    complete = {p: len(ix) for p, ix in found.items() if ix == set(range(len(ix)))}
    wanted = {p: n for p, n in complete.items() if count is None or n == count}
    # The outermost lists: a list nested in another one's entries (experts in a layer) is not a stack.
    outer = [p for p in wanted if not any(p != q and p.startswith(q + ".") for q in complete)]
    if len(outer) == 1:
        return LayerStack(outer[0], wanted[outer[0]], key)
    declared = f" of {count} layers (config `{key}`)" if count else ""
    if not outer:
        raise ConfigError(f"cannot find the stack of layers{declared} in the tensor names of {what}; slices, layer "
                          "ranges and gradients need numbered layers such as model.layers.0...")
    raise ConfigError(f"{what} has several stacks of layers{declared} ({', '.join(sorted(outer))}); slices and "
                      "gradients need a model with one")


def parameter_order(hf_config: Mapping[str, Any] | None) -> list[str] | None:
    """The parameter names of the architecture in the order it registers them (None when it cannot be built).

    The model is instantiated on the meta device: no memory is allocated and nothing is downloaded.
    """
    if not hf_config or "model_type" not in hf_config:
        return None
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.for_model(**dict(hf_config))
        arch = (hf_config.get("architectures") or [None])[0]
        cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
        with torch.device("meta"):
            model = cls(config) if cls is not None else transformers.AutoModel.from_config(config)
    except Exception as e:  # noqa: BLE001 - an architecture transformers cannot build: the name rule decides
        logger.info("cannot build %s on the meta device (%s: %s); placing tensors by name",
                    hf_config.get("model_type"), type(e).__name__, e)
        return None
    return [n for n, _ in model.named_parameters(remove_duplicate=False)] + [n for n, _ in model.named_buffers()]


def split_outside(names: Sequence[str], stack: LayerStack, order: Sequence[str] | None) -> tuple[set[str], set[str]]:
    """The tensors outside the stack, as (before it, after it): embeddings first; final norm and head last.

    Args:
        names: the checkpoint's tensor names.
        stack: its layer stack.
        order: :func:`parameter_order` of its architecture (None: decided by name alone).
    """
    last = stack.prefix.rsplit(".", 1)[-1]
    in_stack = re.compile(rf"(^|\.){re.escape(last)}\.\d+\.")
    start = None
    if order:
        start = next((i for i, n in enumerate(order) if in_stack.search(n)), None)
    before, after = set(), set()
    for name in names:
        if stack.index(name) is not None:
            continue
        pos = None
        if start is not None:
            pos = next((i for i, n in enumerate(order) if n == name or n.endswith("." + name) or
                        name.endswith("." + n)), None)
        is_before = pos < start if pos is not None else bool(_PRE_NAME.search(name))
        (before if is_before else after).add(name)
    return before, after


def stacked_config(hf_config: Mapping[str, Any], stack: LayerStack,
                   layers: Sequence[tuple[Mapping[str, Any], int]]) -> dict[str, Any]:
    """``hf_config`` for an output made of ``layers``, one ``(source config, source layer)`` per output layer.

    The layer count is set, and every per-layer list of the config (``layer_types`` of Qwen2,
    Gemma2/3...: a list as long as the layer count) is rebuilt from the source layers' entries, so
    a stacked layer keeps its attention type and transformers accepts the config.
    """
    out = dict(hf_config)
    key = stack.count_key or "num_hidden_layers"
    old = out.get(key, stack.num_layers)
    out[key] = len(layers)
    for name, value in hf_config.items():
        if not isinstance(value, list) or len(value) != old or name == key:
            continue
        rebuilt = []
        for cfg, layer in layers:
            theirs = cfg.get(name)
            if not isinstance(theirs, list) or layer >= len(theirs):
                break
            rebuilt.append(theirs[layer])
        else:
            out[name] = rebuilt
    return out
