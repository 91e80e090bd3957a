"""The extraction methods compared: naive loops, the bare-forward floor, and the peer libraries.

Each returns activations (or a direction) so the benchmark can check that methods computing the same
quantity agree. axes_lib itself is called directly from `run.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from axes_lib.batching import TokenSeq, batches, pad
from axes_lib.models import base_model


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def padded_batches(token_ids: list[list[int]], batch_size: int, max_tokens: int, pad_id: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids, attention_mask) CPU tensors for the length-sorted batches (built before timing).

    The floor keeps its own batching rule (length-sorted, no shared prefixes): it times a bare forward of
    every prompt in full, the reference the library's prefix sharing is compared against."""
    seqs = [TokenSeq(i, list(ids), len(ids) - 1, len(ids)) for i, ids in enumerate(token_ids)]  # no shared prefixes
    return [pad([seq.ids for seq in batch], pad_id, "right") for batch in batches(seqs, batch_size, max_tokens)]


@torch.inference_mode()
def bare_forward(model: Any, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The floor: the base model (all decoder layers + final norm, no LM head, no hooks) on pre-built batches."""
    base = base_model(model)
    device = _device(model)
    for ids, mask in batches:
        base(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)


@torch.inference_mode()
def naive_last_token(model: Any, token_ids: list[list[int]]) -> torch.Tensor:
    """One prompt at a time through the full model with `output_hidden_states=True`; the last position of each layer.

    `hidden_states[i + 1]` is the output of decoder layer i, except the last entry, which transformers returns
    after the final norm. Returns `[n, L, d]` float32 on CPU.
    """
    device = _device(model)
    rows = []
    for ids in token_ids:
        out = model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True)
        rows.append(torch.stack([h[0, -1] for h in out.hidden_states[1:]]).float().cpu())
    return torch.stack(rows)


@torch.inference_mode()
def naive_response_mean(model: Any, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> torch.Tensor:
    """One prompt + response at a time with `output_hidden_states=True`; mean over the response positions."""
    device = _device(model)
    rows = []
    for p, r in zip(prompt_ids, response_ids, strict=True):
        out = model(input_ids=torch.tensor([p + r], device=device), output_hidden_states=True)
        rows.append(torch.stack([h[0, len(p):].float().mean(dim=0) for h in out.hidden_states[1:]]).cpu())
    return torch.stack(rows)


def import_repeng() -> Any:
    """repeng 0.4.0 uses `np.float_`, removed in numpy 2: restore the alias before importing it."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]
    import repeng
    import repeng.extract

    return repeng


def repeng_hiddens(model: Any, tokenizer: Any, pair_strings: list[str], n_layers: int, batch_size: int = 32) -> dict[int, np.ndarray]:
    """repeng's own extraction, `repeng.extract.batched_get_hiddens`, as `ControlVector.train` calls it (inference mode)."""
    repeng = import_repeng()
    with torch.inference_mode():
        return repeng.extract.batched_get_hiddens(model, tokenizer, pair_strings, list(range(n_layers)), batch_size)


def repeng_train(model: Any, tokenizer: Any, pairs: list[tuple[str, str]], n_layers: int, batch_size: int = 32) -> dict[int, np.ndarray]:
    """`ControlVector.train(method="pca_diff")` on all layers: extraction plus one PCA per layer."""
    repeng = import_repeng()
    dataset = [repeng.DatasetEntry(positive=p, negative=n) for p, n in pairs]
    vector = repeng.ControlVector.train(model, tokenizer, dataset, hidden_layers=list(range(n_layers)),
                                        batch_size=batch_size, method="pca_diff")
    return vector.directions


def steering_vectors_train(model: Any, tokenizer: Any, pairs: list[tuple[str, str]], n_layers: int, batch_size: int = 1) -> dict[int, torch.Tensor]:
    """steering-vectors' `train_steering_vector`: mean aggregator, `read_token_index=-1`, all decoder layers."""
    from steering_vectors import mean_aggregator, train_steering_vector

    vector = train_steering_vector(model, tokenizer, pairs, layers=list(range(n_layers)), layer_type="decoder_block",
                                   read_token_index=-1, aggregator=mean_aggregator(), batch_size=batch_size,
                                   show_progress=False)
    return {int(k): v.detach().float().cpu() for k, v in vector.layer_activations.items()}
