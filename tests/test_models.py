"""Model loading: keys, hub-style folders of tiny random models, the embedded model's fetch, errors before any work."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from axes_lib import models
from axes_lib.models import MODEL_KEYS, decoder_layers, load_model, model_name


def test_keys_resolve_without_loading():
    assert model_name("qwen") == "Qwen/Qwen2.5-3B-Instruct"
    assert model_name("llama") == "meta-llama/Llama-3.2-3B-Instruct"
    assert model_name("some-org/some-model") == "some-org/some-model"
    assert model_name("qwen2.5-0.5b") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert set(MODEL_KEYS) >= {"smollm2", "qwen", "llama", "qwen2.5-0.5b"}
    assert all(model_name(key) == hub for key, hub in MODEL_KEYS.items())


@pytest.mark.parametrize("key", ["", "   ", "not a model", "a/b/c"])
def test_unknown_key_is_a_value_error(key):
    with pytest.raises(ValueError, match="model key"):
        model_name(key)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("smollm2 ", "contains whitespace"),
        (" qwen", "contains whitespace"),
        ("Qwen/Qwen2.5-3B-Instruct\n", r"control character '\\n' at position 24"),
        ("some-org/some model", "contains whitespace"),
        ("some-org/some\u00a0model", "contains whitespace"),  # a no-break space looks like none
        ("some-org/some\tmodel", r"control character '\\t'"),
        ("some-org/some-model\x00", r"control character '\\x00'"),
        ("some-org/some\u200bmodel", r"control character '\\u200b'"),  # zero-width space (format character)
    ],
)
def test_key_with_whitespace_or_control_characters_is_rejected(key, message):
    """Such a key used to pass for a hub id (or fail as "unknown") and break only at the download."""
    with pytest.raises(ValueError, match=f"model key .*{message}"):
        model_name(key)


def test_a_local_folder_may_contain_a_space(tmp_path):
    folder = tmp_path / "my models" / "tiny"
    folder.mkdir(parents=True)
    assert model_name(str(folder)) == str(folder)
    with pytest.raises(ValueError, match="contains whitespace"):
        model_name(f"{folder} ")
    with pytest.raises(ValueError, match="contains whitespace"):  # a path that is not a folder gets no exemption
        model_name(str(tmp_path / "my models" / "missing"))


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
def test_local_folder_loads_its_weights_float32_in_eval_mode(request, tiny_model_dir, family):
    model, tokenizer = request.getfixturevalue(f"tiny_{family}")
    assert model.dtype == torch.float32 and not model.training
    assert len(decoder_layers(model)) == model.config.num_hidden_layers
    # The weights are the saved ones (not a fresh random init), compared with the file read independently.
    saved = load_file(str(tiny_model_dir(family) / "model.safetensors"))
    state = model.state_dict()
    assert saved and all(torch.equal(state[name], tensor) for name, tensor in saved.items())
    assert tokenizer.pad_token == "<pad>"  # the tokenizer's own pad token is kept


def test_missing_pad_token_becomes_eos(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_model_dir("llama"), folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("pad_token", None)
    config_file.write_text(json.dumps(config))
    _, tokenizer = load_model(str(folder))
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"


def test_embedded_model_is_cached_safetensors(smollm2):
    model, tokenizer = smollm2
    path = models.smollm2_path()
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    config = json.loads((path / "config.json").read_text())
    assert model.config.model_type == config["model_type"] == "llama"
    assert len(decoder_layers(model)) == config["num_hidden_layers"]
    assert tuple(model.get_input_embeddings().weight.shape) == (config["vocab_size"], config["hidden_size"])
    assert "<|im_start|>" in tokenizer.chat_template


def test_embedded_qwen_is_cached_safetensors_with_its_own_lm_head(qwen05, qwen05_path):
    from axes_lib import weights

    model, tokenizer = qwen05
    config = json.loads((qwen05_path / "config.json").read_text())
    assert model.config.model_type == config["model_type"] == "qwen2"
    assert len(decoder_layers(model)) == config["num_hidden_layers"] == 24
    embeddings = model.get_input_embeddings().weight
    assert tuple(embeddings.shape) == (config["vocab_size"], config["hidden_size"]) == (151936, 896)
    # The GGUF carries an output matrix of its own: the conversion must not tie it to the embeddings.
    assert config["tie_word_embeddings"] is False
    assert not torch.equal(model.get_output_embeddings().weight, embeddings)
    # Generation stops at the end of the assistant's turn.
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    stamp = json.loads((qwen05_path / weights.STAMP).read_text())
    assert stamp == weights.stamp(models.EMBEDDED["qwen2.5-0.5b"][1])
