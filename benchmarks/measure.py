"""Timing, peak memory, FLOP counting and matmul throughput for the benchmark.

Memory: on CPU a sampling thread reads the process's resident set size (psutil, every 5 ms) while a
step runs; we report the step's peak RSS and its increase over the RSS when the step started, after
`gc.collect()` and glibc `malloc_trim(0)` have returned freed memory to the OS (so the baseline is not
inflated by earlier steps). It covers everything the process holds (torch tensors, Python objects,
tokenizer buffers); a peak shorter than 5 ms can be missed. On CUDA we also report
`torch.cuda.max_memory_allocated` over the step minus the allocation when it started.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

MiB = 1024 * 1024


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class RssSampler:
    """Peak resident set size of this process while the block runs, sampled in a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.proc = psutil.Process()
        self.start_rss = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = self.proc.memory_info().rss
            if rss > self.peak_rss:
                self.peak_rss = rss
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.start_rss = self.peak_rss = self.proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    warmup_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    peak_rss_increase_mib: float = 0.0
    peak_cuda_mib: float | None = None
    peak_cuda_increase_mib: float | None = None
    result: Any = None

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def summary(self, units: float | None = None, unit_name: str = "prompts") -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds_min": round(self.min, 4),
            "seconds_median": round(self.median, 4),
            "seconds_all": [round(s, 4) for s in self.seconds],
            "warmup_seconds": round(self.warmup_seconds, 4),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "peak_rss_increase_mib": round(self.peak_rss_increase_mib, 1),
        }
        if self.peak_cuda_mib is not None:
            out["peak_cuda_allocated_mib"] = round(self.peak_cuda_mib, 1)
            out["peak_cuda_increase_mib"] = round(self.peak_cuda_increase_mib or 0.0, 1)
        if units is not None:
            out[f"{unit_name}"] = units
            out[f"{unit_name}_per_s_at_min"] = round(units / self.min, 3)
            out[f"{unit_name}_per_s_at_median"] = round(units / self.median, 3)
        return out


def _timed_run(timing: Timing, fn: Callable[[], Any], device: str, keep: bool) -> float:
    """One timed call of `fn` with memory sampling; the result is kept on `timing` when `keep`."""
    cuda = str(device).startswith("cuda")
    timing.result = None
    gc.collect()
    _malloc_trim()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        cuda_start = torch.cuda.memory_allocated()
    sync(device)
    with RssSampler() as mem:
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        dt = time.perf_counter() - t0
    timing.seconds.append(dt)
    timing.peak_rss_mib = max(timing.peak_rss_mib, mem.peak_rss / MiB)
    timing.peak_rss_increase_mib = max(timing.peak_rss_increase_mib, (mem.peak_rss - mem.start_rss) / MiB)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        timing.peak_cuda_mib = max(timing.peak_cuda_mib or 0.0, peak / MiB)
        timing.peak_cuda_increase_mib = max(timing.peak_cuda_increase_mib or 0.0, (peak - cuda_start) / MiB)
    if keep:
        timing.result = result
    return dt


def _warm(timing: Timing, warmup: Callable[[], Any] | None, device: str) -> None:
    if warmup is None:
        return
    gc.collect()
    sync(device)
    t0 = time.perf_counter()
    warmup()
    sync(device)
    timing.warmup_seconds = time.perf_counter() - t0


def time_it(name: str, fn: Callable[[], Any], warmup: Callable[[], Any] | None, repeats: int, device: str,
            log: Callable[[str], None] = print) -> Timing:
    """Run `warmup` once (untimed), then `fn` `repeats` times; wall-clock seconds with device sync, peak memory."""
    timing = Timing(name)
    _warm(timing, warmup, device)
    for r in range(repeats):
        dt = _timed_run(timing, fn, device, keep=r == repeats - 1)
        log(f"   {name}: repeat {r + 1}/{repeats} {dt:.3f} s")
    return timing


def time_interleaved(steps: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]], repeats: int, device: str,
                     log: Callable[[str], None] = print) -> dict[str, Timing]:
    """Like `time_it` for several steps whose ratio matters: all warm-ups, then repeat rounds of one run of each step.

    Interleaving spreads slow spells of a shared machine over all the steps compared instead of one of them.
    """
    timings = {name: Timing(name) for name in steps}
    for name, (_, warmup) in steps.items():
        _warm(timings[name], warmup, device)
    for r in range(repeats):
        for name, (fn, _) in steps.items():
            dt = _timed_run(timings[name], fn, device, keep=r == repeats - 1)
            log(f"   {name}: repeat {r + 1}/{repeats} {dt:.3f} s")
    return timings


def matmul_throughput(device: str, dtype: torch.dtype, n: int, reps: int, rounds: int = 3) -> dict[str, Any]:
    """Dense matmul FLOP/s: best of `rounds` rounds of `reps` n×n @ n×n products (2·n³ FLOPs each)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=c)  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=c)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    flops = 2 * n**3 * reps
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "reps": reps, "best_seconds": round(best, 4),
            "flop_per_s": flops / best, "gflop_per_s": round(flops / best / 1e9, 2)}


class FlopCounter:
    """Counts the model FLOPs of the forwards of a base (decoder) model, from its inputs.

    A forward pre-hook on the base model records each call's `input_ids`, `attention_mask` and cache length;
    counting happens afterwards (no host sync while timed). Per decoder layer actually run, a real (non-pad)
    token costs 2 × (matmul parameters of the layer) FLOPs, and attention 4 × heads × head_dim × context,
    where context is the number of real positions it attends to (causal, cached prefix included). Padding
    tokens, the embedding lookup, norms and the LM head are not counted; tokens of a shared prefix are
    counted once, because they are computed once.
    """

    def __init__(self, base: Any, layers_run: int):
        cfg = base.config
        self.layers_run = layers_run
        blocks = base.layers
        self.params_per_layer = sum(p.numel() for p in blocks[0].parameters() if p.dim() >= 2)
        self.heads = cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.calls: list[tuple[torch.Tensor | None, int, int, int]] = []
        self.enabled = False
        self._handle = base.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if not self.enabled:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        b, t = ids.shape[:2]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
        mask = kwargs.get("attention_mask")
        self.calls.append((mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None, b, t, past))

    def reset(self) -> None:
        self.calls.clear()

    def close(self) -> None:
        self._handle.remove()

    def totals(self) -> dict[str, Any]:
        tokens = 0
        context = 0
        padded = 0
        for mask, b, t, past in self.calls:
            padded += b * t
            if mask is None:
                tokens += b * t
                context += b * sum(past + j + 1 for j in range(t))
            else:
                m = mask.detach().to("cpu", torch.long)
                ctx = m.cumsum(dim=1)[:, -t:] * m[:, -t:]
                tokens += int(m[:, -t:].sum())
                context += int(ctx.sum())
        linear = 2 * self.params_per_layer * tokens * self.layers_run
        attention = 4 * self.heads * self.head_dim * context * self.layers_run
        return {"forward_calls": len(self.calls), "real_tokens_computed": tokens, "padded_tokens_computed": padded,
                "attention_context_sum": context, "linear_flops": linear, "attention_flops": attention,
                "model_flops": linear + attention, "layers_run": self.layers_run,
                "matmul_params_per_layer": self.params_per_layer}
