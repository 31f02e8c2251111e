"""Where the permutation symmetries of a transformer live: which axis of which tensor is which feature.

A transformer computes the same function when the units of a hidden layer are renamed consistently:
every tensor that *produces* those features (``out`` axes: rows of a linear, a norm's scale, an
embedding's columns) and every tensor that *reads* them (``in`` axes: columns of a linear) is
permuted along that axis by the same permutation. :func:`arch_spec` names, for every floating tensor
of a checkpoint, which *slot* each of its axes belongs to:

- ``res``: the residual stream, one permutation shared by every block, the embeddings, every norm
  and the heads that read it (tied embeddings are one tensor, permuted once);
- ``mlp.L``: the MLP hidden units of block L;
- ``q.L``, ``k.L``, ``v.L``, ``o.L``: the attention features of block L (query/key/value outputs and
  the context vectors ``o_proj`` reads). They are not free: a permutation of them must move whole
  heads (a key/value group with its query heads, for GQA) and, within a head, the same dims of Q and K
  (only without RoPE, which ties dims to rotation frequencies) and of V and O. :class:`HeadLayout`
  says which; :mod:`hf_time.align.perms` builds only such permutations.

Supported: BERT-like encoders (``bert``, ``roberta``, ``xlm-roberta``) and Llama-like decoders
(``llama``, ``mistral``, ``qwen2``), bare or with their usual heads. Anything else is refused with the
reason (:class:`~hf_time.errors.UnsupportedArchitectureError`), never aligned approximately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from hf_time.errors import UnsupportedArchitectureError
from hf_time.io import TensorInfo

BERT_TYPES = ("bert", "roberta", "xlm-roberta")
LLAMA_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED = "BERT-like encoders (" + ", ".join(BERT_TYPES) + ") and Llama-like decoders (" + ", ".join(LLAMA_TYPES) + ")"

OUT, IN = "out", "in"


@dataclass(frozen=True)
class Axis:
    """One permuted axis: its slot (``res``, ``mlp.3``, ``q.3``...) and whether the tensor produces or reads it."""

    slot: str
    role: str  # OUT or IN


@dataclass(frozen=True)
class TensorSpec:
    """A floating tensor of the checkpoint and the slot of each of its axes (None: not permuted).

    Attributes:
        name: the tensor's name in the checkpoint.
        axes: one entry per dimension.
        layer: its block index (None outside the blocks).
        head: part of a task head (classifier, LM head): kept per model, may differ in shape between models.
    """

    name: str
    axes: tuple[Axis | None, ...]
    layer: int | None = None
    head: bool = False

    def axis_of(self, slot: str) -> int | None:
        """The (first) axis belonging to ``slot``, or None."""
        return next((i for i, a in enumerate(self.axes) if a is not None and a.slot == slot), None)


@dataclass(frozen=True)
class HeadLayout:
    """How attention features are grouped into heads.

    Attributes:
        heads: query heads H; kv_heads: key/value heads (H for multi-head attention, fewer for GQA).
        head_dim: dims per head.
        qk_free: whether Q/K dims may be permuted within a head (False under RoPE, which pairs dims with
            rotation frequencies: those dims are left untouched).
    """

    heads: int
    kv_heads: int
    head_dim: int
    qk_free: bool

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads


@dataclass(frozen=True)
class LayerModules:
    """Module names of block L whose activations activation matching reads (``name`` + input or output)."""

    block: str  # its output is the residual stream after the block
    q: str
    k: str
    v: str
    o: str  # its *input* is the per-head context
    mlp: str  # its *input* is the MLP hidden activation


@dataclass(frozen=True)
class ArchSpec:
    """The permutation structure of one checkpoint.

    Attributes:
        family: ``bert`` or ``llama``; model_type, architecture: from its config.
        hidden, intermediate, layers: widths and depth.
        attention: the head layout.
        tensors: every floating tensor by name.
        embed_module: the module whose output is the residual stream entering block 0.
        modules: per block, the modules activation matching hooks.
    """

    family: str
    model_type: str
    architecture: str
    hidden: int
    intermediate: int
    layers: int
    attention: HeadLayout
    tensors: Mapping[str, TensorSpec]
    embed_module: str
    modules: tuple[LayerModules, ...]
    prefix: str = ""

    def stage(self, name: str) -> str:
        """``pre`` (embeddings), ``block`` (inside block L) or ``post`` (final norm, pooler, task heads)."""
        if self.tensors[name].layer is not None:
            return "block"
        return "pre" if name.startswith(self.embed_module + ".") else "post"

    @property
    def slots(self) -> dict[str, int]:
        """Every slot and its size."""
        a = self.attention
        out = {"res": self.hidden}
        for i in range(self.layers):
            out.update({f"mlp.{i}": self.intermediate, f"q.{i}": a.heads * a.head_dim, f"k.{i}": a.kv_heads * a.head_dim,
                        f"v.{i}": a.kv_heads * a.head_dim, f"o.{i}": a.heads * a.head_dim})
        return out

    def layer_tensors(self, layer: int) -> list[TensorSpec]:
        return [t for t in self.tensors.values() if t.layer == layer]

    def global_tensors(self) -> list[TensorSpec]:
        return [t for t in self.tensors.values() if t.layer is None]


def _ax(slot: str | None, role: str = OUT) -> Axis | None:
    return None if slot is None else Axis(slot, role)


def _bert_rules(arch: str) -> list[tuple[bool, str, tuple]]:
    """(is a head, regex on the name, axes) for BERT-like checkpoints. ``{L}`` marks the block index; the first
    character of each regex is a placeholder (``B``: the base model's prefix goes there, ``H``: nothing)."""
    lin = lambda o, i: (_ax(o), _ax(i, IN))  # noqa: E731 - (out slot, in slot) of a linear weight
    rules = [
        (r"B(embeddings\.(word|position|token_type)_embeddings\.weight)", (None, _ax("res"))),
        (r"Bembeddings\.LayerNorm\.(weight|bias)", (_ax("res"),)),
        (r"Bencoder\.layer\.{L}\.attention\.self\.(query)\.weight", lin("q", "res")),
        (r"Bencoder\.layer\.{L}\.attention\.self\.(key)\.weight", lin("k", "res")),
        (r"Bencoder\.layer\.{L}\.attention\.self\.(value)\.weight", lin("v", "res")),
        (r"Bencoder\.layer\.{L}\.attention\.self\.query\.bias", (_ax("q"),)),
        (r"Bencoder\.layer\.{L}\.attention\.self\.key\.bias", (_ax("k"),)),
        (r"Bencoder\.layer\.{L}\.attention\.self\.value\.bias", (_ax("v"),)),
        (r"Bencoder\.layer\.{L}\.attention\.output\.dense\.weight", lin("res", "o")),
        (r"Bencoder\.layer\.{L}\.(attention\.output\.dense\.bias|attention\.output\.LayerNorm\.(weight|bias))", (_ax("res"),)),
        (r"Bencoder\.layer\.{L}\.intermediate\.dense\.weight", lin("mlp", "res")),
        (r"Bencoder\.layer\.{L}\.intermediate\.dense\.bias", (_ax("mlp"),)),
        (r"Bencoder\.layer\.{L}\.output\.dense\.weight", lin("res", "mlp")),
        (r"Bencoder\.layer\.{L}\.output\.(dense\.bias|LayerNorm\.(weight|bias))", (_ax("res"),)),
        # The pooler reads the residual stream; its own output basis is left as is, so heads on it are unchanged.
        (r"Bpooler\.dense\.weight", (None, _ax("res", IN))),
        (r"Bpooler\.dense\.bias", (None,)),
    ]
    heads = {
        # classifier on the pooled output (BERT) / the first token's residual (RoBERTa's dense + out_proj)
        "ForSequenceClassification": [
            (r"Hclassifier\.(weight|bias)", None),  # shapes decide below: BERT's reads the pooler output
            (r"Hclassifier\.dense\.weight", (None, _ax("res", IN))),
            (r"Hclassifier\.(dense\.bias|out_proj\.(weight|bias))", "free"),
        ],
        "ForTokenClassification": [(r"Hclassifier\.weight", (None, _ax("res", IN))), (r"Hclassifier\.bias", (None,))],
        "ForMaskedLM": [
            (r"H(cls\.predictions\.transform\.dense|lm_head\.dense)\.weight", (_ax("res"), _ax("res", IN))),
            (r"H(cls\.predictions\.transform\.(dense\.bias|LayerNorm\.(weight|bias))|lm_head\.(dense\.bias|layer_norm\.(weight|bias)))",
             (_ax("res"),)),
            (r"H(cls\.predictions\.decoder|lm_head\.decoder)\.weight", (None, _ax("res", IN))),
            (r"H(cls\.predictions\.(decoder\.)?bias|lm_head\.(decoder\.)?bias)", (None,)),
        ],
        "Model": [],
    }
    kind = next((k for k in heads if arch.endswith(k)), None)
    if kind is None:
        raise UnsupportedArchitectureError(f"architecture {arch!r} is not supported for alignment: hf_time knows the bare "
                                           "model and its ForSequenceClassification, ForTokenClassification and "
                                           "ForMaskedLM heads")
    return [(False, r, ax) for r, ax in rules] + [(True, r, ax) for r, ax in heads[kind]]


def _llama_rules(arch: str) -> list[tuple[bool, str, tuple]]:
    lin = lambda o, i: (_ax(o), _ax(i, IN))  # noqa: E731
    rules = [
        (r"Bembed_tokens\.weight", (None, _ax("res"))),
        (r"Bnorm\.weight", (_ax("res"),)),
        (r"Blayers\.{L}\.(input_layernorm|post_attention_layernorm)\.weight", (_ax("res"),)),
        (r"Blayers\.{L}\.self_attn\.q_proj\.weight", lin("q", "res")),
        (r"Blayers\.{L}\.self_attn\.k_proj\.weight", lin("k", "res")),
        (r"Blayers\.{L}\.self_attn\.v_proj\.weight", lin("v", "res")),
        (r"Blayers\.{L}\.self_attn\.q_proj\.bias", (_ax("q"),)),
        (r"Blayers\.{L}\.self_attn\.k_proj\.bias", (_ax("k"),)),
        (r"Blayers\.{L}\.self_attn\.v_proj\.bias", (_ax("v"),)),
        (r"Blayers\.{L}\.self_attn\.o_proj\.weight", lin("res", "o")),
        (r"Blayers\.{L}\.self_attn\.o_proj\.bias", (_ax("res"),)),
        (r"Blayers\.{L}\.mlp\.(gate|up)_proj\.weight", lin("mlp", "res")),
        (r"Blayers\.{L}\.mlp\.(gate|up)_proj\.bias", (_ax("mlp"),)),
        (r"Blayers\.{L}\.mlp\.down_proj\.weight", lin("res", "mlp")),
        (r"Blayers\.{L}\.mlp\.down_proj\.bias", (_ax("res"),)),
    ]
    heads = {
        "ForCausalLM": [(r"Hlm_head\.weight", (None, _ax("res", IN)))],
        "ForSequenceClassification": [(r"Hscore\.weight", (None, _ax("res", IN)))],
        "Model": [],
    }
    kind = next((k for k in heads if arch.endswith(k)), None)
    if kind is None:
        raise UnsupportedArchitectureError(f"architecture {arch!r} is not supported for alignment: hf_time knows the bare "
                                           "model and its ForCausalLM and ForSequenceClassification heads")
    return [(False, r, ax) for r, ax in rules] + [(True, r, ax) for r, ax in heads[kind]]


def _prefix(names: list[str], suffix: str, where: str) -> str:
    found = sorted({n[: -len(suffix)] for n in names if n.endswith(suffix)}, key=len)
    if not found:
        raise UnsupportedArchitectureError(f"{where} has no tensor named '...{suffix}'; it does not look like a checkpoint "
                                           f"of its config's model type")
    return found[0]


def _check_config(cfg: Mapping, family: str, where: str) -> None:
    """Config options that break the symmetries (or that hf_time has not verified) are refused by name."""
    problems = []
    if family == "bert":
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            problems.append(f"position_embedding_type={cfg['position_embedding_type']!r} (relative position "
                            "embeddings are shared across head dims; only 'absolute' is supported)")
        if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
            problems.append("is_decoder/add_cross_attention (cross-attention is not supported)")
        if cfg.get("embedding_size") not in (None, cfg.get("hidden_size")):
            problems.append("embedding_size differs from hidden_size (an embedding projection)")
    if problems:
        raise UnsupportedArchitectureError(f"{where} cannot be aligned: " + "; ".join(problems))


def arch_spec(cfg: Mapping | None, infos: Mapping[str, TensorInfo], where: str = "the model") -> ArchSpec:
    """The permutation structure of a checkpoint, from its ``config.json`` and tensor headers.

    Args:
        cfg: the parsed ``config.json``.
        infos: its tensors (names, dtypes, shapes), e.g. from safetensors headers.
        where: how messages name the model.

    Raises:
        UnsupportedArchitectureError: an unsupported model type, architecture, config option or a floating
            tensor the layout does not cover (each named, with what is supported).
    """
    if not cfg:
        raise UnsupportedArchitectureError(f"{where} has no config.json; alignment needs it to know the architecture")
    model_type = cfg.get("model_type")
    family = "bert" if model_type in BERT_TYPES else "llama" if model_type in LLAMA_TYPES else None
    if family is None:
        raise UnsupportedArchitectureError(f"{where} has model_type {model_type!r}; hf_time aligns {SUPPORTED} only (their "
                                           "permutation symmetries are the ones hf_time.align.spec describes)")
    _check_config(cfg, family, where)
    arch = (cfg.get("architectures") or [f"{model_type.title()}Model"])[0]
    names = [n for n, i in infos.items() if i.is_float]
    base = _prefix(names, "embeddings.word_embeddings.weight" if family == "bert" else "embed_tokens.weight", where)
    if family == "bert":
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        layout = HeadLayout(heads, heads, hidden // heads, qk_free=True)
        rules = _bert_rules(arch)
        embed = f"{base}embeddings"
        mods = lambda p: LayerModules(p[:-1], p + "attention.self.query", p + "attention.self.key",  # noqa: E731
                                      p + "attention.self.value", p + "attention.output.dense", p + "output.dense")
        block = "encoder.layer"
    else:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or heads)
        layout = HeadLayout(heads, kv, int(cfg.get("head_dim") or hidden // heads), qk_free=False)
        rules = _llama_rules(arch)
        embed = f"{base}embed_tokens"
        mods = lambda p: LayerModules(p[:-1], p + "self_attn.q_proj", p + "self_attn.k_proj",  # noqa: E731
                                      p + "self_attn.v_proj", p + "self_attn.o_proj", p + "mlp.down_proj")
        block = "layers"
    layers = int(cfg["num_hidden_layers"])
    # Body rules start with the base prefix (``bert.``, ``model.``, or nothing); head rules are top-level names.
    compiled = [(head, re.compile("^" + (r[1:] if head else re.escape(base) + r[1:]).replace("{L}", r"(?P<L>\d+)") + r"\Z"),
                 ax) for head, r, ax in rules]
    tensors: dict[str, TensorSpec] = {}
    for name in names:
        spec = _match(name, infos[name], compiled, hidden)
        if spec is None:
            raise UnsupportedArchitectureError(
                f"tensor {name!r} of {where} ({arch}) is not part of the {family} layout hf_time knows, so it cannot "
                f"be permuted consistently; supported: {SUPPORTED} with their standard heads")
        tensors[name] = spec
    return ArchSpec(family, model_type, arch, hidden, int(cfg["intermediate_size"]), layers, layout, tensors, embed,
                    tuple(mods(f"{base}{block}.{i}.") for i in range(layers)), base)


def _match(name: str, info: TensorInfo, rules, hidden: int) -> TensorSpec | None:
    for head, rx, axes in rules:
        m = rx.match(name)
        if not m:
            continue
        layer = int(m.group("L")) if "L" in rx.groupindex else None
        if axes is None or axes == "free":  # reads an unpermuted basis (BERT's pooler output, RoBERTa's dense output)
            axes = (None,) * len(info.shape)
        if layer is not None:
            axes = tuple(None if a is None else Axis(a.slot if a.slot == "res" else f"{a.slot}.{layer}", a.role) for a in axes)
        if len(axes) != len(info.shape):
            return None
        return TensorSpec(name, axes, layer, head)
    return None


def check_same_shape(ref: ArchSpec, expert: ArchSpec, ref_infos: Mapping[str, TensorInfo],
                     expert_infos: Mapping[str, TensorInfo], ref_name: str, expert_name: str) -> None:
    """Two checkpoints can be aligned when their bodies have the same layout; task heads may differ.

    Raises:
        IncompatibleExpertsError: another family or width, or a body tensor missing or of another shape
            (the first one is named with both shapes).
    """
    from hf_time.errors import IncompatibleExpertsError

    dims = lambda s: (s.family, s.hidden, s.intermediate, s.layers, s.attention)  # noqa: E731
    if dims(ref) != dims(expert):
        what = lambda s: (f"{s.model_type} with hidden {s.hidden}, intermediate {s.intermediate}, {s.layers} layers, "  # noqa: E731
                          f"{s.attention.heads} heads ({s.attention.kv_heads} kv) of {s.attention.head_dim}")
        raise IncompatibleExpertsError(f"{expert_name} is a {what(expert)} but {ref_name} is a {what(ref)}; alignment "
                                       "permutes units, it cannot change widths or depth", expected=dims(ref),
                                       found=dims(expert))
    for name, t in ref.tensors.items():
        if t.head:
            continue
        other = expert_infos.get(name)
        if other is None or other.shape != ref_infos[name].shape:
            found = None if other is None else list(other.shape)
            raise IncompatibleExpertsError(
                f"tensor {name!r} has shape {found} in {expert_name} but {list(ref_infos[name].shape)} in {ref_name}; "
                "aligned models must have the same architecture and shapes", tensor=name,
                expected=ref_infos[name].shape, found=None if other is None else other.shape)
