"""Shared model fixtures: the embedded SmolLM2 once per session, and tiny random-weight models."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2():
    from axes_lib.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Build (once) a tiny random-weight Llama or Qwen2 model plus a tokenizer, saved like a hub download."""
    made: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family in made:
            return made[family]
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
        from tokenizers import Tokenizer, models, pre_tokenizers

        words = ["<pad>", "<s>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
        common = dict(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
        torch.manual_seed(0)
        if family == "llama":
            model = LlamaForCausalLM(LlamaConfig(**common))
        else:
            model = Qwen2ForCausalLM(Qwen2Config(**common))
        path = tmp_path_factory.mktemp(f"tiny-{family}")
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        made[family] = path
        return path

    return build
