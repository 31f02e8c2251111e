"""Merge methods. Importing this package registers every built-in method.

Use :func:`get` to look a method up by name and :func:`list_methods` to enumerate them.
"""

from hf_time.merges.registry import (
    KINDS,
    DataMethod,
    DenseMethod,
    LowRankMethod,
    MethodSpec,
    ParamInfo,
    SequentialMethod,
    TensorContext,
    get,
    list_methods,
    param,
    register,
    seeded_generator,
    tensor_seed,
)

# Built-in methods register themselves on import (one module each).
from hf_time.merges import (  # noqa: E402,F401  (imported for registration)
    linear,
    task_arithmetic,
    ties,
    dare,
    breadcrumbs,
    model_stock,
    magmax,
    slerp,
    passthrough,
    ema,
    continual,
    opcm,
    lora_cat,
    lora_svd,
    rmm,
    pcb,
    darex,
    fisher,
)

__all__ = [
    "KINDS",
    "DataMethod",
    "DenseMethod",
    "LowRankMethod",
    "SequentialMethod",
    "seeded_generator",
    "MethodSpec",
    "ParamInfo",
    "TensorContext",
    "get",
    "list_methods",
    "param",
    "register",
    "tensor_seed",
]
