"""Parity with mergekit 0.1.5 on the configs people write (issue 11): the same YAML, the same tensors.

Runs benchmarks/mergekit_parity.py's cases (gradients, filters, slices with layer ranges,
passthrough, tokenizer_source; tiny Llama and Qwen2) through mergekit in its own environment
(.venv-mergekit, made by benchmarks/setup_mergekit.sh; MERGEKIT_VENV overrides) and through
hf_time, and asserts every tensor agrees within float32 rounding. Skipped, with the reason, when
mergekit is not installed; the same features are tested by hand in test_mergekit_features.py.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import mergekit_parity  # noqa: E402

REASON = mergekit_parity.mergekit_available()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if REASON:
        pytest.skip(REASON)
    return {r["case"]: r for r in mergekit_parity.run_parity(tmp_path_factory.mktemp("parity"))}


@pytest.mark.parametrize("case", sorted(mergekit_parity.case_configs(
    {f"{a}-{k}": Path(k) for a in mergekit_parity.ARCHS for k in ("base", "a", "b", "v")})))
def test_same_tensors_as_mergekit(results, case):
    result = results[case]
    assert result["ok"], result["problems"]
    assert result["max_abs_diff"] <= mergekit_parity.TOLERANCE
