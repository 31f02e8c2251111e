"""A tiny byte-level BPE tokenizer and tiny causal LMs built in-process, for causal-LM tests (offline)."""

from __future__ import annotations

from pathlib import Path

import torch

from tiny import tiny_llama_config

# Every word the causal-LM tests use, so each is one or two BPE tokens.
CORPUS = [
    "Review: the film was great and fun. Answer: positive",
    "Review: the film was bad and dull. Answer: negative",
    "Question: what is two plus two? Answer: four",
    "Question: what colour is the sky? Answer: blue",
    "apple banana cherry zebra lion tiger fruit animal yes no spam ham hello world",
    "user assistant system you are a helpful model",
] * 20
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(*, chat_template: bool = True, bos: bool = False):
    """A byte-level BPE tokenizer (GPT-2 style, a few hundred tokens) trained on :data:`CORPUS`.

    Args:
        chat_template: give it a ChatML chat template.
        bos: prepend ``<s>`` to every encoded text (Llama-2 style) instead of nothing (GPT-2 style).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_causal_lm(path: str | Path, tokenizer=None, *, seed: int = 0, **config_overrides) -> Path:
    """Save a tiny random Llama and its tokenizer (default :func:`tiny_tokenizer`) to ``path``."""
    from transformers import LlamaForCausalLM

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    torch.manual_seed(seed)
    kw = dict(vocab_size=len(tokenizer), max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    kw.update(config_overrides)
    model = LlamaForCausalLM(tiny_llama_config(**kw))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
