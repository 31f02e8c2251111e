"""Compatibility of experts with the base, decided from configs and safetensors headers alone.

Runs before any weight is downloaded, so a wrong expert costs a few kilobytes, not gigabytes.
"""

from __future__ import annotations

from typing import Mapping

from hf_time.errors import IncompatibleExpertsError
from hf_time.io import TensorInfo

# Config keys that must agree for two checkpoints to be merged tensor by tensor.
ARCH_KEYS = ("model_type", "architectures")


def _show(names: list[str], limit: int = 3) -> str:
    head = ", ".join(repr(n) for n in names[:limit])
    return head + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_architecture(base_name: str, base_cfg: Mapping | None, name: str, cfg: Mapping | None) -> None:
    """Raise if the expert's model type or architectures differ from the base's."""
    if not base_cfg or not cfg:
        return
    for key in ARCH_KEYS:
        a, b = base_cfg.get(key), cfg.get(key)
        if a is not None and b is not None and a != b:
            raise IncompatibleExpertsError(
                f"expert {name} has {key}={b!r} but base {base_name} has {key}={a!r}; "
                "merge only finetunes of the same base architecture",
                expected=a,
                found=b,
            )


def check_tensors(
    base_name: str, base: Mapping[str, TensorInfo], name: str, expert: Mapping[str, TensorInfo]
) -> None:
    """Raise if the expert's tensor names or shapes differ from the base's (dtypes may differ).

    Integer buffers (e.g. BERT's ``position_ids``, which newer transformers no longer save) are not
    merged but copied from the base, so an expert may lack them or carry extra ones.
    """
    missing = [k for k in base if k not in expert and base[k].is_float]
    if missing:
        raise IncompatibleExpertsError(
            f"expert {name} is missing tensor {_show(missing)} present in base {base_name}; "
            "is it a finetune of this base (same architecture and head)?",
            tensor=missing[0],
        )
    extra = [k for k in expert if k not in base and expert[k].is_float]
    if extra:
        raise IncompatibleExpertsError(
            f"expert {name} has tensor {_show(extra)} that base {base_name} lacks; "
            "is it a finetune of this base (same architecture and head)?",
            tensor=extra[0],
        )
    for k, info in base.items():
        other = expert.get(k)
        if other is None:
            continue
        if other.shape != info.shape:
            raise IncompatibleExpertsError(
                f"tensor {k!r} has shape {list(other.shape)} in expert {name} but {list(info.shape)} in base "
                f"{base_name}; experts must share the base's shapes (same config, e.g. vocab size)",
                tensor=k,
                expected=info.shape,
                found=other.shape,
            )
        if info.is_float != other.is_float:
            raise IncompatibleExpertsError(
                f"tensor {k!r} is {other.dtype} in expert {name} but {info.dtype} in base {base_name}",
                tensor=k,
                expected=info.dtype,
                found=other.dtype,
            )


def check_compatible(
    base_name: str,
    base_cfg: Mapping | None,
    base_infos: Mapping[str, TensorInfo],
    experts: list[tuple[str, Mapping | None, Mapping[str, TensorInfo]]],
) -> None:
    """Check every expert against the base; the first problem raises IncompatibleExpertsError."""
    for name, cfg, infos in experts:
        check_architecture(base_name, base_cfg, name, cfg)
        check_tensors(base_name, base_infos, name, infos)
