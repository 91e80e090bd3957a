"""Residual-stream activations after every decoder layer, captured with forward hooks.

`extract` runs one batched forward of the base model per batch (no LM head), stops after the last
requested layer, groups prompts by length so little is spent on padding, and — because the prompts
of this method share long prefixes (one system prompt per persona) — computes each shared token
prefix once and reuses its KV cache for every prompt that starts with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm  # text bars: tqdm.auto widgets would land in executed notebooks

from axes_lib.batching.plan import TokenSeq, assign_prefixes, batches, pad
from axes_lib.batching.prefix import PrefixTable, StopForward, run_until_stop
from axes_lib.directions import validate_direction
from axes_lib.interventions import check_layer_list
from axes_lib.io import load_tensors, save_tensors, tensor_metadata
from axes_lib.models import base_model, decoder_layers

__all__ = ["METHODS", "Method", "StoredActivations", "check_layers", "contrastive_activations", "extract",
           "extract_methods", "load_activations", "save_activations", "token_projections", "token_projections_many"]

Method = Literal["last_token", "response_mean"]
METHODS: tuple[str, ...] = ("last_token", "response_mean")


def check_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """Validate layer indices against the model; `None` means all layers."""
    if layers is None:
        return list(range(n_layers))
    layers = check_layer_list(layers)
    for layer in layers:
        if layer >= n_layers:
            raise ValueError(f"layer {layer} out of range: model has {n_layers} layers (0..{n_layers - 1})")
    return layers


def _check_inputs(prompts: Sequence[str], methods: Sequence[str], responses: Sequence[str] | None) -> None:
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
    if not methods:
        raise ValueError(f"no methods given: use one or more of {METHODS}")
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not a single string")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: nothing to extract")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} is empty or not a string")
    if "response_mean" in methods:
        if responses is None:
            raise ValueError("method 'response_mean' needs responses: one generated response per prompt")
        if len(responses) != len(prompts):
            raise ValueError(f"got {len(responses)} responses for {len(prompts)} prompts: need one per prompt")
        for i, response in enumerate(responses):
            if not isinstance(response, str) or not response.strip():
                raise ValueError(f"response {i} is empty: response_mean needs at least one response token")


def _tokenize(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str] | None) -> list[TokenSeq]:
    """Prompts are fully formatted (chat template applied), so no special tokens are added here."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    if responses is None:
        return [TokenSeq(i, ids, len(ids) - 1, len(ids)) for i, ids in enumerate(prompt_ids)]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    seqs = []
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        if not r:
            raise ValueError(f"response {i} tokenizes to no tokens")
        seqs.append(TokenSeq(i, p + r, len(p) - 1, len(p) + len(r)))
    return seqs


class _Capture:
    """Forward hooks that reduce each layer's output to the rows we need, in place into `outs`.

    `outs` maps what to read to where it goes: "last_token" and "response_mean" into
    `[n_prompts, n_layers, d_model]`, "response_tokens" (each response token's projection on `units`, a
    `[d_model, n_directions]` matrix per layer) into `[n_layers, n_response_tokens, n_directions]`. One forward serves all of them.
    """

    def __init__(self, model: Any, layers: list[int], outs: dict[str, torch.Tensor],
                 units: dict[int, torch.Tensor] | None = None):
        self.blocks = decoder_layers(model)
        self.layers = layers
        self.column = {layer: col for col, layer in enumerate(layers)}
        self.last = max(layers)
        self.outs = outs
        self.units = units  # "response_tokens": unit directions per layer, [d_model, n_directions]
        self.active = False
        self.batch: list[TokenSeq] = []
        self.rows: torch.Tensor | None = None  # output row per batch row
        self.read: torch.Tensor | None = None  # last_token: position per batch row
        self.weights: torch.Tensor | None = None  # response_mean: [b, t] averaging weights
        self.offsets: dict[int, int] = {}  # response_tokens: first output column of each sequence
        self.handles: list[Any] = []

    def begin(self, batch: list[TokenSeq], device: Any) -> None:
        """Set what to read from the next forward: one row per sequence, right-padded after its prefix."""
        width = max(len(s.rest) for s in batch)
        self.batch = batch
        self.rows = torch.tensor([s.index for s in batch])
        self.read = torch.tensor([s.start - s.prefix for s in batch], device=device)
        if "response_mean" in self.outs:
            weights = torch.zeros((len(batch), width), dtype=torch.float32)
            for row, seq in enumerate(batch):
                weights[row, seq.start + 1 - seq.prefix : seq.stop - seq.prefix] = 1.0 / (seq.stop - seq.start - 1)
            self.weights = weights.to(device)

    def __enter__(self) -> _Capture:
        for layer in range(self.last + 1):
            self.handles.append(self.blocks[layer].register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, layer: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            if self.active and layer in self.column:
                col = self.column[layer]
                if "last_token" in self.outs:
                    batch = torch.arange(hidden.shape[0], device=hidden.device)
                    self.outs["last_token"][self.rows, col] = hidden[batch, self.read].float().cpu()
                if "response_mean" in self.outs:
                    values = torch.einsum("bt,btd->bd", self.weights, hidden.float())
                    self.outs["response_mean"][self.rows, col] = values.cpu()
                if "response_tokens" in self.outs:
                    assert self.units is not None
                    proj = (hidden.float() @ self.units[layer].to(hidden.device)).cpu()
                    for row, seq in enumerate(self.batch):
                        at = self.offsets[seq.index]
                        span = proj[row, seq.start + 1 - seq.prefix : seq.stop - seq.prefix]
                        self.outs["response_tokens"][col, at : at + len(span)] = span
            if layer == self.last:
                raise StopForward

        return hook


@torch.inference_mode()
def extract(model: Any, tokenizer: Any, prompts: Sequence[str], method: Method = "last_token",
            responses: Sequence[str] | None = None, **options: Any) -> torch.Tensor:
    """Residual stream after each requested decoder layer: `[n_prompts, n_layers, d_model]`, float32, CPU.

    `last_token` reads the final prompt token (the position before generation starts);
    `response_mean` averages over the response tokens in one teacher-forced pass over prompt + response.
    Prompts must be fully formatted (chat template applied). Results do not depend on batching,
    padding side or prefix sharing (up to float rounding). `options` are those of `extract_methods`
    (layers, batch_size, max_batch_tokens, share_prefix, min_prefix, progress), which reads both in one pass.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
    return extract_methods(model, tokenizer, prompts, responses if method == "response_mean" else None, (method,),
                           **options)[method]


@torch.inference_mode()
def extract_methods(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str] | None = None,
    methods: Sequence[Method] = METHODS,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
    share_prefix: bool = True,
    min_prefix: int = 16,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """`{method: extract(..., method)}` for each of `methods`, from one forward pass.

    With responses, the pass runs over prompt + response, and by causality the last prompt token's
    state is the same as in a pass over the prompt alone: both readings for the price of the longer one.
    """
    methods = tuple(methods)
    _check_inputs(prompts, methods, responses)
    if batch_size < 1 or max_batch_tokens < 1:
        raise ValueError(f"batch_size and max_batch_tokens must be >= 1, got {batch_size}, {max_batch_tokens}")
    layers = check_layers(layers, model.config.num_hidden_layers)
    seqs = _tokenize(tokenizer, prompts, responses if "response_mean" in methods else None)
    outs = {m: torch.zeros(len(seqs), len(layers), model.config.hidden_size, dtype=torch.float32) for m in methods}
    with _Capture(model, layers, outs) as capture:
        _drive(model, tokenizer, seqs, capture, batch_size, max_batch_tokens, share_prefix, min_prefix,
               progress, f"extract {' + '.join(methods)}")
    return outs


def _drive(model: Any, tokenizer: Any, seqs: list[TokenSeq], capture: _Capture, batch_size: int, max_batch_tokens: int,
           share_prefix: bool, min_prefix: int, progress: bool, desc: str) -> None:
    """Run every sequence through the decoder with `capture` reading it: shared prefixes first, then batches."""
    base = base_model(model)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefixes = assign_prefixes(seqs, min_prefix) if share_prefix else []
    table = PrefixTable.build(model, prefixes, pad_id, capture.last, max_batch_tokens) if prefixes else None
    bar = tqdm(total=len(seqs), desc=desc, disable=not progress, leave=False)
    for batch in batches(seqs, batch_size, max_batch_tokens):
        width = max(len(s.rest) for s in batch)
        ids, mask = pad([seq.rest for seq in batch], pad_id, "right")  # right padding: positions are read by index
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "use_cache": False}
        if batch[0].prefix:
            assert table is not None
            rows = [s.row for s in batch]
            kwargs.update(cache=table.cache(model, rows), use_cache=True,
                          attention_mask=torch.cat([table.mask[rows], mask.to(device)], dim=1),
                          position_ids=table.lengths(rows)[:, None] + torch.arange(width, device=device))
        else:
            kwargs["attention_mask"] = mask.to(device)
        capture.begin(batch, device)
        capture.active = True
        try:
            run_until_stop(base, **kwargs)
        finally:
            capture.active = False
        bar.update(len(batch))
    bar.close()


def token_projections(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    direction: Mapping[int, torch.Tensor],
    layers: Sequence[int],
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
    progress: bool = False,
) -> dict[int, torch.Tensor]:
    """Projection of every response token's residual stream on the unit direction, per layer.

    One teacher-forced pass over prompt + response (as `extract(method="response_mean")`), but instead
    of averaging, each response token's projection is kept: `{layer: Tensor[total response tokens]}`,
    concatenated in prompt order. These are the per-position values a cap acts on during generation.
    """
    return token_projections_many(model, tokenizer, prompts, responses, [direction], layers, batch_size,
                                  max_batch_tokens, progress)[0]


@torch.inference_mode()
def token_projections_many(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    directions: Sequence[Mapping[int, torch.Tensor]],
    layers: Sequence[int],
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
    progress: bool = False,
) -> list[dict[int, torch.Tensor]]:
    """`token_projections` on each of several directions, from one pass: one `{layer: Tensor}` per direction."""
    _check_inputs(prompts, ("response_mean",), responses)
    layers = check_layers(layers, model.config.num_hidden_layers)
    if not directions:
        raise ValueError("give at least one direction to project on")
    for k, direction in enumerate(directions):
        missing = [layer for layer in layers if layer not in direction]
        if missing:
            raise ValueError(f"direction {k} has no vector for layers {missing}")
        validate_direction({layer: direction[layer] for layer in layers}, model)  # zero, NaN or wrong length: fail here
    seqs = _tokenize(tokenizer, prompts, responses)
    # Per layer a [d_model, n_directions] matrix of unit vectors: the capture projects on all of them at once.
    units = {layer: torch.stack([(d[layer] / d[layer].norm()).float() for d in directions], dim=1) for layer in layers}
    out = torch.zeros(len(layers), sum(s.stop - s.start - 1 for s in seqs), len(directions), dtype=torch.float32)
    with _Capture(model, layers, {"response_tokens": out}, units) as capture:
        offset = 0
        for seq in seqs:
            capture.offsets[seq.index] = offset
            offset += seq.stop - seq.start - 1
        _drive(model, tokenizer, seqs, capture, batch_size, max_batch_tokens, True, 16, progress, "token projections")
    return [{layer: out[col, :, k] for col, layer in enumerate(layers)} for k in range(len(directions))]


@dataclass(frozen=True)
class StoredActivations:
    """Activations as step 2 stores them: row `j` of `acts` belongs to response `rows[j]` (empty answers may
    have no row), column `c` to decoder layer `layers[c]`."""

    acts: torch.Tensor
    rows: list[int]
    layers: list[int]

    def positions(self, responses: Sequence[int]) -> list[int]:
        """The rows of `acts` that hold these responses, in their order (responses without a row are skipped)."""
        where = {r: j for j, r in enumerate(self.rows)}
        return [where[i] for i in responses if i in where]

    def at(self, responses: Sequence[int], layers: Sequence[int] | None = None) -> torch.Tensor:
        """`[n, n_layers, d_model]` of these responses (as `positions`), at `layers` (default: all stored)."""
        acts = self.acts[self.positions(responses)]
        if layers is None:
            return acts
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise ValueError(f"layers {missing} were not extracted: the file holds {self.layers}")
        return acts[:, [self.layers.index(layer) for layer in layers]]


def save_activations(path: str | Path, acts: torch.Tensor, rows: Sequence[int], layers: Sequence[int],
                     **metadata: str) -> Path:
    """Write activations with the response index of each row and the layer of each column (safetensors)."""
    if acts.shape[:2] != (len(rows), len(layers)):
        raise ValueError(f"acts has shape {tuple(acts.shape)} for {len(rows)} rows and {len(layers)} layers")
    return save_tensors(path, {"acts": acts, "rows": torch.tensor(list(rows))},
                        {**metadata, "layers": json.dumps(list(layers))})


def load_activations(path: str | Path) -> StoredActivations:
    """Read what `save_activations` wrote."""
    tensors, meta = load_tensors(path)
    if "acts" not in tensors or "rows" not in tensors or "layers" not in meta:
        raise ValueError(f"{path}: not an activations file (needs tensors 'acts' and 'rows' and 'layers' metadata)")
    return StoredActivations(tensors["acts"], tensors["rows"].tolist(), json.loads(meta["layers"]))


def contrastive_activations(paths: Any, layers: Sequence[int] | None = None, batch_size: int = 32, model: Any = None,
                            tokenizer: Any = None) -> dict[str, StoredActivations]:
    """Step 2: both methods' activations of step 1's answers (`paths`: an `artifacts.Artifacts`), every layer
    or `layers`. Read from the cache (`paths.activations(method)`, not committed) when it was extracted from
    the same answers, model, layers and code; otherwise extracted and cached, so a fresh clone computes them
    once, in whichever step needs them first. The model is loaded when not given (its identity is in the key).
    """
    from axes_lib.io import read_jsonl
    from axes_lib.models import load_model
    from axes_lib.prompts import format_prompt, load_personas
    from axes_lib.resume import code_fingerprint, fingerprint, model_identity

    if not paths.responses.exists():
        raise FileNotFoundError(f"{paths.responses} is missing: run notebook 01 for model_key={paths.model_key!r} first")
    if model is None:
        model, tokenizer = load_model(paths.model_key)
    key = fingerprint(hashlib.sha256(paths.responses.read_bytes()).hexdigest(), list(layers) if layers is not None else None,
                      batch_size, model_identity(model), code_fingerprint(["axes_lib.activations", "axes_lib.prompts"]))
    cached = {m: paths.activations(m) for m in METHODS}
    if all(p.is_file() and tensor_metadata(p).get("key") == key for p in cached.values()):
        return {m: load_activations(p) for m, p in cached.items()}
    responses = read_jsonl(paths.responses)
    systems = {p.name: p.system for p in load_personas()}
    prompts = [format_prompt(systems[r["persona"]], r["query"], model_type=paths.model_key, tokenizer=tokenizer)
               for r in responses]
    keep = [i for i, r in enumerate(responses) if r["response"].strip()]
    layer_ids = list(range(len(decoder_layers(model)))) if layers is None else list(layers)
    # One teacher-forced pass reads both: by causality the last prompt token's state does not depend on the
    # response that follows it. An empty answer has no response-mean, but its prompt has a last token.
    acts = extract_methods(model, tokenizer, [prompts[i] for i in keep], [responses[i]["response"] for i in keep],
                           layers=layers, batch_size=batch_size)
    rows = {"last_token": keep, "response_mean": keep}
    if len(keep) < len(responses):
        acts["last_token"] = extract(model, tokenizer, prompts, layers=layers, batch_size=batch_size)
        rows["last_token"] = list(range(len(responses)))
    for method, values in acts.items():
        save_activations(cached[method], values, rows[method], layer_ids, model=paths.model_key, method=method,
                         responses=str(paths.responses), key=key)
    return {m: StoredActivations(acts[m], rows[m], layer_ids) for m in METHODS}
