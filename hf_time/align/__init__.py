"""Experts from different inits: permutation alignment (Git Re-Basin), ZipIt! and PLeaS.

Pure tensor functions (:mod:`.spec`, :mod:`.perms`, :mod:`.assign`, :mod:`.costs`, :mod:`.weight_matching`,
:mod:`.activation_matching`, :mod:`.zipit`, :mod:`.pleas`) are separate from what reads models and data
(:mod:`.activations`, :mod:`.models`, :mod:`.merging`) and from the builds that pin, download, write and
publish (:mod:`.inputs`, :mod:`.build`, :mod:`.merge_build`, :mod:`.merge_align`).

Public entry points (imported on first use, so ``hf_time.config`` can read :mod:`.config` cheaply):
:func:`align`, :func:`zipit`, :func:`pleas`, :func:`load_alignment`, :func:`verify`, :class:`MultiHeadModel`.
"""

_EXPORTS = {"align": "build", "load_alignment": "build", "verify": "build", "zipit": "merge_build",
            "pleas": "merge_build", "MultiHeadModel": "multihead", "MatchingConfig": "config", "ZipItConfig": "config",
            "PLeaSConfig": "config"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hf_time.align' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"hf_time.align.{_EXPORTS[name]}"), name)
