"""hf_time: temporal model merging on the Hugging Face Hub.

Merge experts by Hub id (``org/name@revision``) with a registry of methods, publish every snapshot
as one commit with a model card and lineage, and run TIME timelines.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy re-exports keep `import hf_time` light (no torch / huggingface_hub at import time).
    if name in ("merge", "MergeResult"):
        from hf_time import api

        return getattr(api, name)
    if name in ("Hub",):
        from hf_time.hub import Hub

        return Hub
    raise AttributeError(f"module 'hf_time' has no attribute {name!r}")
