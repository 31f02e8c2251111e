"""Hub round trips on the embedded Hub: RMM published as one commit, reverted from the Hub and pushed back."""

import json

import pytest
import torch

from conftest import HUB_TOKEN
from hf_time.lineage import Lineage
from hf_time.api import merge
from hf_time.cli import main
from hf_time.errors import IncompatibleExpertsError, MissingAdapterConfigError
from hf_time.hub import Hub
from test_lora_adapters import IDS, peft_model, save_tiny_lora
from tiny import save_tiny_llama


def _set_base(folder, base_id):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base_id
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def hub_lora(hub, tmp_path_factory):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    d = tmp_path_factory.mktemp("hub_lora")
    base = save_tiny_llama(d / "base", 0)
    local = {"sst": save_tiny_lora(d / "sst", base, 1), "qa": save_tiny_lora(d / "qa", base, 2, use_rslora=True),
             "code": save_tiny_lora(d / "code", base, 3), "other": save_tiny_lora(d / "other", base, 4)}
    _set_base(local["sst"], "lr/base")  # trained on the Hub base by id: checked by id
    _set_base(local["other"], "lr/other-base")
    for name, folder in (("base", base), *local.items()):
        api.create_repo(f"lr/{name}", exist_ok=True)
        api.upload_folder(repo_id=f"lr/{name}", folder_path=str(folder))
    api.create_tag("lr/qa", tag="v1")
    return {"api": api, "base": base, **local}


def test_rmm_publish_and_revert_from_the_hub(hub, hub_lora, tmp_path):
    from huggingface_hub import ModelCard, snapshot_download

    api, h = hub_lora["api"], Hub(endpoint=hub.url, token=HUB_TOKEN)
    res = merge("lr/base", ["lr/sst", "lr/qa@v1", "lr/code"], "rmm", out=tmp_path / "rmm", push_to="lr/rmm", tag="step-1",
                hub=h, progress=False)
    pub = res.published
    assert pub.changed and pub.tag == "step-1" and api.list_repo_commits("lr/rmm")[0].commit_id == pub.commit
    assert set(api.list_repo_files("lr/rmm", revision="step-1")) >= {"rmm.safetensors", "hf_time.json", "README.md", "merge_config.yaml"}
    lineage = res.lineage
    v1 = next(t.target_commit for t in api.list_repo_refs("lr/qa").tags if t.name == "v1")
    assert lineage.experts[1].sha == v1 and lineage.base.sha == api.model_info("lr/base").sha
    assert lineage.output.files["rmm.safetensors"] == api.get_paths_info("lr/rmm", ["rmm.safetensors"], revision="step-1")[0].lfs.sha256
    card = ModelCard.load("lr/rmm")
    assert card.data.base_model == ["lr/base", "lr/sst", "lr/qa", "lr/code"] and "rmm" in card.data.tags
    assert "hf-time revert lr/rmm --expert 0" in card.text
    # revert from the Hub by name, push the adapter back, load it from the Hub with PEFT
    code = main(["revert", "lr/rmm@step-1", "--expert", "qa", "--out", str(tmp_path / "qa"), "--push-to", "lr/qa-reverted",
                 "--endpoint", hub.url, "--quiet"])
    assert code == 0
    path = snapshot_download("lr/qa-reverted")
    cfg = json.loads(open(f"{path}/adapter_config.json").read())
    assert cfg["base_model_name_or_path"] == "lr/base" and cfg["revision"] == lineage.base.sha and cfg["use_rslora"]
    reverted = Lineage.load(path)
    assert reverted.source.sha == pub.commit and reverted.experts[0].sha == v1
    base = hub_lora["base"]
    torch.testing.assert_close(peft_model(base, path)(IDS).logits, peft_model(base, hub_lora["qa"])(IDS).logits, rtol=1e-5, atol=1e-5)


def test_hub_adapters_in_a_dense_merge_and_lora_cat(hub, hub_lora, tmp_path):
    from transformers import AutoModelForCausalLM

    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    dense = merge("lr/base", ["lr/sst", "lr/code"], "task_arithmetic", out=tmp_path / "ta", hub=h, progress=False)
    cat = merge("lr/base", ["lr/sst", "lr/code"], "lora_cat", out=tmp_path / "cat", push_to="lr/cat", hub=h, progress=False)
    torch.testing.assert_close(peft_model(hub_lora["base"], cat.out_dir)(IDS).logits,
                               AutoModelForCausalLM.from_pretrained(dense.out_dir)(IDS).logits, rtol=1e-5, atol=1e-5)
    cfg = json.loads((cat.out_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "lr/base" and cfg["revision"] == cat.lineage.base.sha


def test_hub_bad_adapters(hub, hub_lora, tmp_path):
    api, h = hub_lora["api"], Hub(endpoint=hub.url, token=HUB_TOKEN)
    for method in ("task_arithmetic", "rmm"):
        with pytest.raises(IncompatibleExpertsError, match="lr/other was trained on lr/other-base but the merge base is lr/base"):
            merge("lr/base", ["lr/sst", "lr/other"], method, out=tmp_path / "x", hub=h, progress=False)
    api.create_repo("lr/no-config", exist_ok=True)
    api.upload_file(repo_id="lr/no-config", path_or_fileobj=str(hub_lora["sst"] / "adapter_model.safetensors"),
                    path_in_repo="adapter_model.safetensors")
    with pytest.raises(MissingAdapterConfigError, match="lr/no-config has adapter weights but no adapter_config.json"):
        merge("lr/base", ["lr/sst", "lr/no-config"], "lora_cat", out=tmp_path / "x", hub=h, progress=False)
    assert not (tmp_path / "x").exists()
