"""Finetuning a tiny random Llama on causal-LM tasks: completion-only loss, full and LoRA, bad input."""

import json

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel

import hf_time.lm_training as lm_training
from hf_time.evaluation import load_model
from hf_time.errors import ConfigError, IncompatibleTaskError, OutputExistsError
from hf_time.lm_evaluation import evaluate_lm_task
from hf_time.lm_task_types import InstructionTask, PromptClassificationTask, PromptFormat
from hf_time.lm_tasks import lm_replay_pool
from hf_time.trainer_common import TrainingStats, training_arguments
from hf_time.training import LoraSpec, TrainingConfig, finetune
from tiny_lm import save_tiny_causal_lm, tiny_tokenizer

FAST = dict(steps=16, learning_rate=3e-3, batch_size=8, max_length=32, warmup_ratio=0.0, freeze_embeddings=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("lm") / "base")


def _toy(name="toy", verbalizers=("fruit", "animal")):
    texts = [f"{w} {w} number {i}" for i in range(30) for w in ("cherry", "zebra")]
    data = datasets.Dataset.from_dict({"text": texts, "label": [0, 1] * 30})
    return PromptClassificationTask(name, data.select(range(8, 60)), data.select(range(8)), ("a", "b"),
                                    PromptFormat("Review: {text}. Answer:", verbalizers))


def _chat_task(n=24):
    rows = [[{"role": "user", "content": f"what colour is the sky? {i}"}, {"role": "assistant", "content": "blue"}]
            for i in range(n)]
    data = datasets.Dataset.from_dict({"messages": rows})
    return InstructionTask("sky", data.select(range(4, n)), data.select(range(4)), short_answer=True, max_new_tokens=3)


def _scores(folder_or_model, task, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(folder_or_model).eval() if not isinstance(folder_or_model, torch.nn.Module) \
        else folder_or_model
    return evaluate_lm_task(model, tokenizer, task, max_length=32)


@pytest.fixture(scope="module")
def full_expert(base, tmp_path_factory):
    return finetune(base, _toy(), TrainingConfig(**FAST), tmp_path_factory.mktemp("runs") / "full", device="cpu")


def test_full_finetune_raises_the_true_label_likelihood(full_expert, base):
    tok = AutoTokenizer.from_pretrained(base)
    before, after = _scores(base, _toy(), tok), _scores(full_expert, _toy(), tok)
    assert after.mean_logprob > before.mean_logprob + 1.0
    assert after.accuracy == 1.0 and before.accuracy < 1.0


def test_full_finetune_writes_a_standard_folder_and_its_stats(full_expert, base):
    stats = TrainingStats.load(full_expert)
    # One-token verbalizers: exactly one loss target per example fed; nothing was truncated at 32 tokens.
    assert stats.steps == len(stats.losses) == 16 and stats.examples == 128 and stats.replay_examples == 0
    assert stats.target_tokens == 128 and stats.truncated == 0 and stats.precision == "fp32"
    prompt_len = len(AutoTokenizer.from_pretrained(base)("Review: cherry cherry number 9. Answer:").input_ids)
    assert stats.tokens >= 128 * (prompt_len + 1) - 128  # texts differ by a digit or two
    assert stats.losses[-1] < stats.losses[0]
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {p.name for p in full_expert.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(full_expert)
    assert type(model).__name__ == "LlamaForCausalLM"
    tuned, orig = load_file(full_expert / "model.safetensors"), load_file(base / "model.safetensors")
    assert tuned.keys() == orig.keys() and not torch.equal(tuned["model.layers.0.self_attn.q_proj.weight"],
                                                            orig["model.layers.0.self_attn.q_proj.weight"])


def test_lora_expert_is_a_peft_adapter_that_loads_and_learned(base, tmp_path):
    from peft import PeftModel

    config = TrainingConfig(**{**FAST, "learning_rate": 2e-2}, lora=LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj")))
    out = finetune(base, _toy(), config, tmp_path / "lora", device="cpu")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and set(adapter["target_modules"]) == {"q_proj", "v_proj"} and adapter["r"] == 4
    assert not (out / "model.safetensors").exists() and not (out / "README.md").exists()
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at zero
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(out)).eval()
    tok = AutoTokenizer.from_pretrained(out)
    tuned = _scores(model, _toy(), tok).mean_logprob
    assert tuned > _scores(base, _toy(), tok).mean_logprob + 0.3
    merged, _ = load_model(out, device="cpu")  # hf_time's loader merges the adapter into its base
    assert _scores(merged, _toy(), tok).mean_logprob == pytest.approx(tuned, abs=1e-4)
    assert TrainingStats.load(out).trainable_parameters == sum(v.numel() for v in weights.values())


def test_gradient_accumulation_gives_the_same_steps(base, tmp_path):
    # Completions of 1 and 3 tokens: a mean of micro-batch means would weigh tokens differently.
    task = _toy(verbalizers=("fruit", "apple"))
    one = finetune(base, task, TrainingConfig(**{**FAST, "steps": 3}), tmp_path / "ga1", device="cpu")
    two = finetune(base, task, TrainingConfig(**{**FAST, "steps": 3, "gradient_accumulation_steps": 4}),
                   tmp_path / "ga4", device="cpu")
    assert TrainingStats.load(two).losses == pytest.approx(TrainingStats.load(one).losses, abs=1e-4)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_sft_chat_with_replay_of_a_classification_task(base, tmp_path):
    pool = lm_replay_pool([_toy("past", ("yes", "no"))], n_per_task=10)
    config = TrainingConfig(**{**FAST, "steps": 6, "replay_fraction": 0.25, "gradient_checkpointing": True})
    out = finetune(base, _chat_task(), config, tmp_path / "chat", device="cpu", replay=pool)
    stats = TrainingStats.load(out)
    assert stats.replay_examples == 2 * 6 and stats.examples == 48
    # Chat completions are the answer turn "blue<|im_end|>\n", replayed ones " yes"/" no" (1 token each).
    answer_turn = len(AutoTokenizer.from_pretrained(base)("blue<|im_end|>\n", add_special_tokens=False).input_ids)
    assert stats.target_tokens == 36 * answer_turn + 12 * 1
    assert stats.losses[-1] < stats.losses[0]


def test_over_long_examples_are_truncated_counted_and_still_trained_on_their_completion(base, tmp_path):
    out = finetune(base, _toy(), TrainingConfig(**{**FAST, "steps": 2, "max_length": 6}), tmp_path / "short", device="cpu")
    stats = TrainingStats.load(out)
    assert stats.truncated == stats.examples == 16 and stats.target_tokens == 16 and stats.tokens == 16 * 6


def test_training_arguments_carry_the_gpu_options(tmp_path):
    config = TrainingConfig(batch_size=8, precision="bf16", gradient_accumulation_steps=2, gradient_checkpointing=True,
                            torch_compile=True)
    args = training_arguments(config, str(tmp_path), torch.device("cpu"))
    assert args.bf16 and args.per_device_train_batch_size == 4 and args.gradient_accumulation_steps == 2
    assert args.gradient_checkpointing and args.torch_compile
    auto = training_arguments(TrainingConfig(), str(tmp_path), torch.device("cpu"))
    assert not auto.bf16 and not auto.gradient_checkpointing and not auto.torch_compile


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a trainer is ever built: bad input must be refused before training."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(lm_training, "_CompletionTrainer", refuse)


def _one_line(err):
    assert "\n" not in str(err.value)


def test_generation_task_on_an_encoder_base_is_refused(tmp_path, no_training):
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=600)).save_pretrained(tmp_path / "bert")
    tiny_tokenizer().save_pretrained(tmp_path / "bert")
    with pytest.raises(IncompatibleTaskError, match="generation task but .* is BertModel, not a causal LM") as err:
        finetune(tmp_path / "bert", _toy(), TrainingConfig(**FAST), tmp_path / "out")
    _one_line(err)


def test_chat_task_without_a_chat_template_is_refused(tmp_path, no_training):
    base = save_tiny_causal_lm(tmp_path / "nochat", tiny_tokenizer(chat_template=False))
    with pytest.raises(IncompatibleTaskError, match="task 'sky' has chat messages but the tokenizer has no chat template") as err:
        finetune(base, _chat_task(), TrainingConfig(**FAST), tmp_path / "out")
    _one_line(err)


def test_absent_lora_targets_are_refused_with_the_model_s_linear_layers(base, tmp_path, no_training):
    config = TrainingConfig(**FAST, lora=LoraSpec())  # the encoder default: query, value
    with pytest.raises(ConfigError, match=r"LoRA target modules \['query', 'value'\] are not in LlamaForCausalLM; "
                                          r"its linear layers are \[.*'q_proj'.*\]") as err:
        finetune(base, _toy(), config, tmp_path / "out")
    _one_line(err)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(base, tmp_path, no_training):
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputExistsError):
        finetune(base, _toy(), TrainingConfig(**FAST), tmp_path / "out")
