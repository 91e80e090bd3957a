"""Model loading: keys, hub-style folders of tiny random models, and errors before any work."""

from __future__ import annotations

import pytest
import torch

from axes_lib.models import MODEL_KEYS, decoder_layers, load_model, model_name


def test_keys_resolve_without_loading():
    assert model_name("qwen") == "Qwen/Qwen2.5-3B-Instruct"
    assert model_name("llama") == "meta-llama/Llama-3.2-3B-Instruct"
    assert model_name("some-org/some-model") == "some-org/some-model"
    assert set(MODEL_KEYS) >= {"smollm2", "qwen", "llama"}


@pytest.mark.parametrize("key", ["", "not a model", "a/b/c"])
def test_unknown_key_is_a_value_error(key):
    with pytest.raises(ValueError, match="model key"):
        model_name(key)


def test_unreachable_hub_model_names_it_and_says_how(monkeypatch, tmp_path):
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import: once another test has imported it, only the
    # constant counts (without it this test waits out the hub's network retries, about 45 s).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(OSError, match=r"Qwen/Qwen2\.5-3B-Instruct.*huggingface-cli download"):
        load_model("qwen")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_local_folder_loads_float32_in_eval_mode(tiny_model_dir, family):
    model, tokenizer = load_model(str(tiny_model_dir(family)))
    assert model.dtype == torch.float32 and not model.training
    assert len(decoder_layers(model)) == model.config.num_hidden_layers
    assert tokenizer.pad_token is not None


def test_embedded_model_is_cached_safetensors(smollm2):
    from axes_lib.models import smollm2_path

    model, tokenizer = smollm2
    path = smollm2_path()
    assert (path / "model.safetensors").is_file()
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert "<|im_start|>" in tokenizer.chat_template
