"""Reading PEFT LoRA adapter folders: config checks, PEFT's scaling rules, key → module → base tensor.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` whose keys look
like ``base_model.model.<module path>.lora_A.weight`` (A: (r, in)) and ``...lora_B.weight``
(B: (out, r)), or ``...lora_embedding_A`` / ``lora_embedding_B`` for embeddings. For each module
ΔW = scaling · B @ A with PEFT's rules: ``scaling = alpha / r`` (``alpha / sqrt(r)`` with
``use_rslora``), ``r`` and ``alpha`` taken per module from ``rank_pattern`` / ``alpha_pattern``
through PEFT's own matcher (:func:`peft.utils.other.get_pattern_key`). Layers whose weight is stored
as ΔWᵀ (``fan_in_fan_out`` Conv1D, embeddings) are marked ``transposed``.

Variants whose update is not ``scaling · B @ A`` on the base weight (DoRA, LoRA bias, trained
biases, modules_to_save, aLoRA, ...) are refused with an :class:`UnsupportedAdapterError` naming the
field and the fix, never merged approximately. Reading the config and the safetensors header is
enough for every check; factors are read lazily, one module at a time.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from hf_time.errors import IncompatibleExpertsError, MissingAdapterConfigError, UnsafeCheckpointError, UnsupportedAdapterError
from hf_time.io import TensorInfo, _TORCH_TO_ST, read_safetensors_header
from hf_time.merges.factors import LoraModule

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."
_KEY_RE = re.compile(
    r"^(?:base_model\.model\.)?(?P<path>.+?)\.(?:(?P<linear>lora_[AB])\.weight|(?P<embedding>lora_embedding_[AB]))$"
)
_MERGE_FIX = "merge it into its base (PeftModel.merge_and_unload) and use the result as a full expert with a dense method"
# Config fields that change what the adapter computes: (field, when it is set, why, fix).
_UNSUPPORTED = (
    ("use_dora", "DoRA rescales every column by a learned magnitude, so ΔW is not scale·B·A", _MERGE_FIX),
    ("lora_bias", "the adapter trains a bias on lora_B", _MERGE_FIX),
    ("modules_to_save", "the adapter stores full copies of these modules", _MERGE_FIX),
    ("trainable_token_indices", "the adapter trains embedding rows directly", _MERGE_FIX),
    ("target_parameters", "LoRA on bare nn.Parameters (e.g. MoE experts) is not supported", _MERGE_FIX),
    ("alora_invocation_tokens", "aLoRA applies ΔW only after its invocation tokens", "use a plain LoRA adapter"),
    ("use_qalora", "QALoRA adapts a quantized base with pooled inputs", _MERGE_FIX),
    ("layer_replication", "the adapter replicates base layers", _MERGE_FIX),
    ("megatron_config", "Megatron-parallel LoRA layers are not supported", "save the adapter unsharded"),
    ("arrow_config", "Arrow routes between adapters per token", "merge the underlying adapters instead"),
    ("kasa_config", "KaSA inserts a learned diagonal between A and B", _MERGE_FIX),
    ("monteclora_config", "MonteCLoRA samples its factors", _MERGE_FIX),
    ("use_bdlora", "BD-LoRA stores block-diagonal factors", _MERGE_FIX),
)
_BASE_ALTERING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


@dataclass(frozen=True)
class ModuleSpec:
    """One adapted module of an adapter, known from its config and safetensors header.

    Attributes:
        path: module path in the PEFT model, without ``base_model.model.`` (e.g. ``model.layers.0.self_attn.q_proj``).
        a_key, b_key: the factors' keys in the weights file.
        rank, alpha, scaling: PEFT's r, lora_alpha and scaling for this module.
        out_features, in_features: ΔW shape in factor orientation (B @ A).
        embedding: an embedding layer (``lora_embedding_A``/``_B`` keys).
        transposed: the base weight is stored as ΔWᵀ (embeddings, ``fan_in_fan_out``).
    """

    path: str
    a_key: str
    b_key: str
    rank: int
    alpha: float
    scaling: float
    out_features: int
    in_features: int
    embedding: bool
    transposed: bool

    @property
    def base_shape(self) -> tuple[int, int]:
        """The shape the base weight of this module must have."""
        shape = (self.out_features, self.in_features)
        return shape[::-1] if self.transposed else shape


def check_adapter_config(cfg: Mapping[str, Any], source: str) -> None:
    """Refuse adapters hf_time cannot merge exactly, listing every problem at once.

    Raises:
        UnsupportedAdapterError: not a LoRA adapter, or a variant/feature that changes ΔW.
    """
    problems = []
    peft_type = str(cfg.get("peft_type", "")).upper()
    if peft_type != "LORA":
        problems.append(f"peft_type={cfg.get('peft_type')!r}: only LoRA adapters are supported")
    for key, why, fix in _UNSUPPORTED:
        value = cfg.get(key)
        if value not in (None, False, [], {}, ""):
            problems.append(f"{key}={value!r}: {why}; {fix}")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias={cfg.get('bias')!r}: the adapter also trains biases of the base; {_MERGE_FIX}")
    init = str(cfg.get("init_lora_weights", True)).lower()
    if init.startswith(_BASE_ALTERING_INITS) or cfg.get("loftq_config"):
        problems.append(f"init_lora_weights={cfg.get('init_lora_weights')!r}: this initialisation changes the base weights; "
                        "save the adapter with save_pretrained(path_initial_model_for_weight_conversion=...) to get a standard LoRA")
    problems += _type_problems(cfg)
    if problems:
        raise UnsupportedAdapterError(f"adapter {source} cannot be merged exactly: " + "; ".join(problems))


def _is_number(x: Any, *, integer: bool = False) -> bool:
    kinds = (int,) if integer else (int, float)
    return isinstance(x, kinds) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _type_problems(cfg: Mapping[str, Any]) -> list[str]:
    """The scaling fields must be what PEFT writes: a positive integer r, a positive alpha, patterns of them."""
    problems = []
    if "r" in cfg and not _is_number(cfg["r"], integer=True):
        problems.append(f"r={cfg['r']!r}: must be a positive integer (the LoRA rank)")
    if "lora_alpha" in cfg and not _is_number(cfg["lora_alpha"]):
        problems.append(f"lora_alpha={cfg['lora_alpha']!r}: must be a positive number")
    for key, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        pattern = cfg.get(key) or {}
        if not isinstance(pattern, Mapping) or not all(isinstance(k, str) and _is_number(v, integer=integer)
                                                       for k, v in pattern.items()):
            problems.append(f"{key}={pattern!r}: must map module names to positive {'integers' if integer else 'numbers'}")
    if not isinstance(cfg.get("use_rslora", False), bool):
        problems.append(f"use_rslora={cfg['use_rslora']!r}: must be true or false")
    return problems


def module_rank_alpha(cfg: Mapping[str, Any], path: str) -> tuple[int, float]:
    """(r, alpha) of one module with PEFT's own ``rank_pattern`` / ``alpha_pattern`` matching."""
    from peft.utils.other import get_pattern_key

    rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    r = rank_pattern.get(get_pattern_key(rank_pattern.keys(), path), cfg.get("r", 8))
    alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), path), cfg.get("lora_alpha", 8))
    return int(r), float(alpha)


def peft_scaling(r: int, alpha: float, use_rslora: bool) -> float:
    """PEFT's LoRA scaling: ``alpha / sqrt(r)`` with rsLoRA, else ``alpha / r``."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def parse_modules(cfg: Mapping[str, Any], infos: Mapping[str, TensorInfo], source: str) -> dict[str, ModuleSpec]:
    """The adapted modules of an adapter from its config and tensor infos (header only).

    Raises:
        UnsupportedAdapterError: a key that is not a LoRA factor (DoRA magnitudes, saved base
            layers, biases...), a conv LoRA, a factor without its partner, or a rank that disagrees
            with the config.
    """
    factors: dict[str, dict[str, tuple[str, TensorInfo]]] = {}
    kinds: dict[str, bool] = {}
    for key, info in infos.items():
        m = _KEY_RE.match(key)
        if m is None:
            raise UnsupportedAdapterError(f"adapter {source} has tensor {key!r}, which is not a LoRA factor; "
                                          + _unknown_key_fix(key))
        which = (m.group("linear") or m.group("embedding"))[-1]  # "A" or "B"
        path = m.group("path")
        if info.torch_dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64) or len(info.shape) != 2:
            raise UnsupportedAdapterError(f"adapter {source}: factor {key!r} is {info.dtype} {list(info.shape)}; "
                                          "only 2-D floating LoRA factors of linear and embedding layers are supported")
        factors.setdefault(path, {})[which] = (key, info)
        kinds[path] = m.group("embedding") is not None
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
    use_rslora = bool(cfg.get("use_rslora", False))
    out = {}
    for path, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise UnsupportedAdapterError(f"adapter {source}: module {path!r} has lora_{''.join(pair)} but no partner factor")
        (a_key, a), (b_key, b) = pair["A"], pair["B"]
        rank = a.shape[0]
        if b.shape[1] != rank:
            raise UnsupportedAdapterError(f"adapter {source}: module {path!r} has A {list(a.shape)} and B {list(b.shape)} (ranks differ)")
        r_cfg, alpha = module_rank_alpha(cfg, path)
        if r_cfg != rank:
            raise UnsupportedAdapterError(f"adapter {source}: module {path!r} has rank {rank} in its weights but r={r_cfg} "
                                          "in adapter_config.json (rank_pattern); the files do not belong together")
        embedding = kinds[path]
        out[path] = ModuleSpec(path, a_key, b_key, rank, alpha, peft_scaling(rank, alpha, use_rslora), b.shape[0], a.shape[1],
                               embedding, transposed=embedding or fan_in_fan_out)
    return out


def _unknown_key_fix(key: str) -> str:
    if key.endswith("base_layer.weight"):
        return ("PEFT saved the full base layer (save_embedding_layers); if the vocabulary is unchanged, re-save with "
                "save_pretrained(..., save_embedding_layers=False)")
    if "lora_magnitude_vector" in key:
        return f"it is a DoRA magnitude; {_MERGE_FIX}"
    return f"only plain LoRA factors can be merged exactly; {_MERGE_FIX}"


class LoraAdapter:
    """A PEFT LoRA adapter folder: its checked config, its modules, and lazy access to its factors.

    Args:
        folder: the adapter folder.
        name: how the adapter is named in messages and lineage (default: the folder).
        allow_pickle: accept ``adapter_model.bin`` (loaded with ``torch.load(weights_only=True)``).

    Raises:
        MissingAdapterConfigError: no ``adapter_config.json``.
        UnsupportedAdapterError: see :func:`check_adapter_config` and :func:`parse_modules`.
        UnsafeCheckpointError: only a pickle weights file and ``allow_pickle`` is False.
    """

    def __init__(self, folder: str | Path, *, name: str | None = None, allow_pickle: bool = False):
        self.folder = Path(folder)
        self.name = name or str(self.folder)
        cfg_path = self.folder / ADAPTER_CONFIG
        if not cfg_path.is_file():
            raise MissingAdapterConfigError(
                f"adapter {self.name} has no {ADAPTER_CONFIG}; save it with PeftModel.save_pretrained, which writes the "
                "config next to adapter_model.safetensors")
        self.config: dict[str, Any] = json.loads(cfg_path.read_text())
        check_adapter_config(self.config, self.name)
        self._pickled: dict[str, torch.Tensor] | None = None
        self._handle = None
        weights = self.folder / ADAPTER_WEIGHTS
        if weights.is_file():
            infos = read_safetensors_header(weights)
        elif (self.folder / ADAPTER_PICKLE).is_file():
            if not allow_pickle:
                raise UnsafeCheckpointError(f"adapter {self.name} only has {ADAPTER_PICKLE} (pickle can run arbitrary code); "
                                            "re-save it with safetensors, or pass --allow-pickle")
            self._pickled = torch.load(self.folder / ADAPTER_PICKLE, map_location="cpu", weights_only=True)
            infos = {k: TensorInfo(k, _TORCH_TO_ST[t.dtype], tuple(t.shape)) for k, t in self._pickled.items()}
        else:
            raise MissingAdapterConfigError(f"adapter {self.name} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
        self.modules: dict[str, ModuleSpec] = parse_modules(self.config, infos, self.name)
        self.dtype = next((i.torch_dtype for i in infos.values()), torch.float32)

    @property
    def base_model(self) -> str | None:
        """``base_model_name_or_path`` of the config (a Hub id or the path it was trained from)."""
        return self.config.get("base_model_name_or_path")

    def _tensor(self, key: str) -> torch.Tensor:
        if self._pickled is not None:
            return self._pickled[key]
        if self._handle is None:
            from safetensors import safe_open

            self._handle = safe_open(str(self.folder / ADAPTER_WEIGHTS), framework="pt")
        return self._handle.get_tensor(key)

    def factors(self, path: str) -> LoraModule:
        """The factors and scaling of one module (read from disk now)."""
        spec = self.modules[path]
        return LoraModule(self._tensor(spec.a_key), self._tensor(spec.b_key), spec.scaling)


def resolve_module(path: str, weight_names: Mapping[str, Any]) -> str | None:
    """The base tensor a module path adapts, by suffix against the base's tensor names.

    ``<path>.weight`` exactly; else the unique name ending in ``.<path>.weight`` (the adapter was
    trained on a bare model, the base checkpoint has a head wrapper); else the path with leading
    components dropped (the other way round). None when nothing or several names match.
    """
    exact = f"{path}.weight"
    if exact in weight_names:
        return exact
    longer = [n for n in weight_names if n.endswith("." + exact)]
    if len(longer) == 1:
        return longer[0]
    if longer:
        return None
    parts = path.split(".")
    for i in range(1, len(parts)):
        shorter = ".".join(parts[i:]) + ".weight"
        if shorter in weight_names:
            return shorter
    return None


def map_to_base(adapter: LoraAdapter, base_name: str, base_infos: Mapping[str, TensorInfo]) -> dict[str, str]:
    """Map every module of ``adapter`` to the base tensor it adapts, checking shapes.

    Returns:
        module path -> base tensor name.

    Raises:
        IncompatibleExpertsError: a module the base lacks, or a ΔW shape that differs from the base's.
    """
    names = {n: i for n, i in base_infos.items() if i.is_float}
    out = {}
    for path, spec in adapter.modules.items():
        target = resolve_module(path, names)
        if target is None:
            raise IncompatibleExpertsError(
                f"adapter {adapter.name} adapts module {path!r}, which base {base_name} lacks (no tensor {path}.weight); "
                "was the adapter trained on another base model?", tensor=path)
        if tuple(names[target].shape) != spec.base_shape:
            raise IncompatibleExpertsError(
                f"adapter {adapter.name} gives module {path!r} a ΔW of shape {list(spec.base_shape)} but base {base_name} "
                f"has {target!r} of shape {list(names[target].shape)}; was the adapter trained on another base model?",
                tensor=target, expected=tuple(names[target].shape), found=spec.base_shape)
        out[path] = target
    return out
