import pytest
import yaml

from hf_time.config import ExpertSpec, MergeConfig, load_merge_config, merge_config_from_dict
from hf_time.errors import ConfigError

MERGEKIT_TIES = """
models:
  - model: org/base
  - model: org/math@v1
    parameters:
      density: 0.5
      weight: 0.7
  - model: org/code
    parameters:
      density: 0.3
      weight: 0.3
merge_method: ties
base_model: org/base
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
"""


def test_mergekit_yaml_is_accepted(tmp_path):
    p = tmp_path / "ties.yaml"
    p.write_text(MERGEKIT_TIES)  # int8_mask is a mergekit memory knob: accepted, no effect
    cfg = load_merge_config(p)
    assert cfg.method == "ties" and cfg.base == "org/base" and cfg.dtype == "bfloat16"
    # the base listed among the models has a zero task vector: mergekit skips it, so do we
    assert cfg.experts == (
        ExpertSpec("org/math@v1", 0.7, {"density": 0.5}),
        ExpertSpec("org/code", 0.3, {"density": 0.3}),
    )
    assert cfg.params == {"normalize": True}


def test_unknown_keys_all_reported_at_once():
    data = yaml.safe_load(MERGEKIT_TIES)
    data["tokenizer"] = {"source": "union"}
    data["models"][1]["lora"] = "x"
    data["parameters"]["density"] = [{"regex": "mlp", "value": 0.5}]  # no such filter syntax
    with pytest.raises(ConfigError) as err:
        merge_config_from_dict(data, "cfg.yaml")
    problems = err.value.problems
    assert len(problems) == 3
    assert any(p.startswith("tokenizer: unknown key; did you mean 'tokenizer_source'?") for p in problems)
    assert any(p.startswith("models[1].lora: unknown key") for p in problems)
    assert any(p.startswith("parameters.density[0]: unknown filter syntax 'regex'") for p in problems)


def test_method_parameters_and_per_model_parameters_reported_with_the_file_problems():
    data = yaml.safe_load(MERGEKIT_TIES)
    data["parameters"]["lamda"] = 0.5
    data["models"][2]["parameters"]["densty"] = 0.1
    data["models"][1]["parameters"]["density"] = 7
    data["dtpye"] = "bfloat16"
    with pytest.raises(ConfigError) as err:
        merge_config_from_dict(data, "cfg.yaml")
    problems = err.value.problems
    assert len(problems) == 4, problems
    assert any(p.startswith("parameters.lamda: unknown parameter 'lamda' for method 'ties'; did you mean 'lambda'?")
               for p in problems)
    assert any(p.startswith("models[2].parameters.densty: cannot be set per expert") and "did you mean 'density'" in p
               for p in problems)
    assert any(p.startswith("models[1].parameters.density: must be <= 1.0") for p in problems)
    assert any(p.startswith("dtpye: unknown key; did you mean 'dtype'?") for p in problems)
    # the list of valid keys is given once, where no close match exists, not repeated for every typo
    assert sum("valid:" in p for p in problems) == 0


def test_missing_required_keys():
    with pytest.raises(ConfigError) as err:
        merge_config_from_dict({"models": []})
    assert any("merge_method" in p for p in err.value.problems)
    assert any("models" in p for p in err.value.problems)


def test_hf_time_keys_and_yaml_round_trip():
    cfg = MergeConfig(base="org/b@abc", experts=(ExpertSpec("org/e1", 0.5, {"density": 0.2}),), method="ties",
                      params={"lambda": 0.3}, dtype="float32", lines=(0.5, 0.25))
    again = merge_config_from_dict(cfg.to_yaml_dict())
    assert again == cfg


def test_invalid_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_merge_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_merge_config(tmp_path / "none.yaml")
