"""Downstream libraries against the embedded Hub: ModelCard, transformers, datasets."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData


def test_model_card_push_and_load(api, repo_name):
    api.create_repo(repo_name)
    data = ModelCardData(license="apache-2.0", base_model=["org/a", "org/b"], tags=["merge"],
                         library_name="transformers", base_model_relation="merge")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n# Merged\n\nA card.\n")
    card.push_to_hub(repo_name, commit_message="card")
    loaded = ModelCard.load(repo_name)
    assert loaded.data.base_model == ["org/a", "org/b"] and loaded.data.base_model_relation == "merge"
    assert "A card." in loaded.text
    info = api.model_info(repo_name)
    assert info.card_data.license == "apache-2.0" and "merge" in info.tags
    assert info.library_name == "transformers"


def test_invalid_card_metadata_is_rejected(api, repo_name):
    api.create_repo(repo_name)
    with pytest.raises(ValueError, match="mapping"):
        api.upload_file(path_or_fileobj=b"---\n- just\n- a list\n---\ntext\n", path_in_repo="README.md",
                        repo_id=repo_name)
    with pytest.raises(ValueError):
        ModelCard("---\n- a\n---\nbody").validate()
    assert api.list_repo_files(repo_name) == [".gitattributes"]


def test_transformers_push_to_hub_and_from_pretrained(api, repo_name):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        vocab_size=100, max_position_embeddings=64)
    model = BertModel(config)
    model.push_to_hub(repo_name, commit_message="tiny bert")
    main = api.list_repo_commits(repo_name)[0].commit_id
    api.create_tag(repo_name, tag="v1")
    model.config.push_to_hub(repo_name, revision="exp", commit_message="config on a branch")

    files = set(api.list_repo_files(repo_name))
    assert {"config.json", "model.safetensors", "README.md"} <= files
    assert next(e for e in api.list_repo_tree(repo_name) if e.path == "model.safetensors").lfs is not None
    for revision in ("v1", main):
        loaded = BertModel.from_pretrained(repo_name, revision=revision)
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
    assert BertConfig.from_pretrained(repo_name, revision="exp").hidden_size == 32
    assert "exp" in {b.name for b in api.list_repo_refs(repo_name).branches}


def test_datasets_push_to_hub_and_load_dataset(api, repo_name):
    from datasets import Dataset, load_dataset

    rows = {"text": ["a", "b", "c"], "label": [0, 1, 0]}
    Dataset.from_dict(rows).push_to_hub(repo_name)
    files = api.list_repo_files(repo_name, repo_type="dataset")
    assert any(f.endswith(".parquet") for f in files) and "README.md" in files
    loaded = load_dataset(repo_name, split="train")
    assert loaded.to_dict() == rows
