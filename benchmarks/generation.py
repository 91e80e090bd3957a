"""Generation throughput unsteered vs additive vs capped (and with the other choice of attention over
shared prefixes than the device's default, see `generate`'s `cascade`): part 3 of
`benchmarks.run`, also runnable alone.

    python -m benchmarks.generation --repeats 7      # writes artifacts/bench/generation_{model}_{device}.json

On a shared 2-core machine one run of a mode varies by several per cent from the next, which is as
large as the cost of the interventions; run alone, the comparison can afford more interleaved rounds.
Each round runs the modes back to back, so the ratio of two modes within a round sees the same
machine state; the file keeps, beside the ratio of the fastest runs, the median of those per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import measure

ROOT = Path(__file__).resolve().parent.parent
# (intervention, label, cascade attention; None: generate's default for the device, on for CPU only). The
# fourth mode is the unsteered run with the other choice: on CPU a copy of the shared prefix in every row's
# KV cache (`cascade=False`), on a GPU cascade attention (`cascade=True`).
STEERED = ((None, "unsteered", None), ("add", "additive", None), ("cap", "capped", None))
OTHER_ATTENTION = {"cpu": (None, "prefix_copies", False), "cuda": (None, "cascade", True)}


def modes(device: str) -> tuple[tuple[str | None, str, bool | None], ...]:
    return (*STEERED, OTHER_ATTENTION["cpu" if str(device).startswith("cpu") else "cuda"])


@dataclass
class GenerationCase:
    """What all three modes generate: the same prompts, tokens and layer band."""

    prompts: list[str]
    new_tokens: int
    band: list[int]
    direction: dict[int, torch.Tensor]
    scale: float  # additive: 2 projection SDs of the assistant activations, averaged over the band
    thresholds: dict[int, float]  # capping: 25th percentile of the assistant projections per layer


def make_case(prompts: list[str], acts: torch.Tensor, assist: list[int], other: list[int], n_prompts: int, new_tokens: int) -> GenerationCase:
    """A band of 4 middle layers, the last-token direction there, and `n_prompts` prompts spread over the set."""
    from axes_lib.calibration import percentile_thresholds, projection_sd
    from axes_lib.directions import compute_direction

    n_layers = acts.shape[1]
    layers = list(range(n_layers))
    start = max(0, n_layers // 2 - 2)
    band = layers[start: start + 4]
    direction = compute_direction(acts[assist], acts[other])
    sd = projection_sd(acts[assist], direction, layers)
    step = max(1, len(prompts) // n_prompts)
    return GenerationCase(prompts[::step][:n_prompts], new_tokens, band, {layer: direction[layer] for layer in band},
                          2.0 * sum(sd[layer] for layer in band) / len(band),
                          percentile_thresholds(acts[assist], direction, layers, band, q=25.0))


def timed_modes(model: Any, tok: Any, case: GenerationCase, repeats: int, device: str,
                log: Any = print) -> tuple[dict[str, measure.Timing], dict[str, Any]]:
    """Time `generate` in each mode (interleaved rounds after one warm-up each); timings and checks."""
    from axes_lib.generation import generate
    from axes_lib.interventions import Add, Cap

    kwargs = dict(max_new_tokens=case.new_tokens, min_new_tokens=case.new_tokens, batch_size=len(case.prompts))
    checks: dict[str, Any] = {}
    stats_box: dict[str, Any] = {}

    def run(mode: str | None, cascade: bool | None) -> list[str]:
        if mode is None:
            return generate(model, tok, case.prompts, cascade=cascade, **kwargs)
        item = Add(case.direction, case.band, scale=case.scale) if mode == "add" else \
            Cap(case.direction, case.band, threshold=case.thresholds)
        stats: dict[Any, Any] = {}
        out = generate(model, tok, case.prompts, cascade=cascade, interventions=item, stats=stats, **kwargs)
        stats_box[mode] = stats[item]
        return out

    def warm(mode: str | None, cascade: bool | None, label: str) -> None:
        calls = [0]

        def count(*_: Any) -> None:
            calls[0] += 1

        handle = model.register_forward_pre_hook(count)  # the LM's forward: generate's steps, not shared-prefix passes
        try:
            run(mode, cascade)
        finally:
            handle.remove()
        checks[f"{label}_forward_calls"] = calls[0]  # one per decoding step when all rows run every step

    steps = {f"generate_{label}": (lambda m=mode, c=cascade: run(m, c), lambda m=mode, c=cascade, n=label: warm(m, c, n))
             for mode, label, cascade in modes(device)}
    log(">> " + ", ".join(steps) + " (interleaved repeats)")
    timings = measure.time_interleaved(steps, repeats, device, log)
    by_label = {name.removeprefix("generate_"): t for name, t in timings.items()}
    checks["expected_forward_calls_per_generate_batch"] = case.new_tokens
    # Every mode ran the same number of decoding steps (min_new_tokens = max_new_tokens: same tokens generated).
    checks["same_token_count"] = len({checks[f"{label}_forward_calls"] for _, label, _ in modes(device)}) == 1
    cap_stats = stats_box.get("cap")
    checks["cap_fraction_fired"] = cap_stats.fraction_fired() if cap_stats else None
    checks["outputs_differ_from_unsteered"] = {
        label: sum(a != b for a, b in zip(by_label["unsteered"].result, by_label[label].result, strict=True))
        for label in ("additive", "capped")}
    # Greedy outputs with and without cascade attention: equal up to float rounding (a near-tie may flip in bfloat16).
    other = modes(device)[-1][1]
    checks[f"{other}_outputs_equal"] = sum(
        a == b for a, b in zip(by_label["unsteered"].result, by_label[other].result, strict=True))
    checks["prompts"] = len(case.prompts)
    return timings, checks


def summary(timings: dict[str, measure.Timing], case: GenerationCase) -> tuple[dict[str, Any], dict[str, Any]]:
    """The results file's `generation` section and its ratios (fastest runs, medians, median per-round ratio)."""
    units = len(case.prompts) * case.new_tokens
    t = {name.removeprefix("generate_"): timing for name, timing in timings.items()}
    generation: dict[str, Any] = {f"{label}_tokens_per_s": units / t[label].min for label in t}
    generation.update({"prompts": len(case.prompts), "new_tokens_per_prompt": case.new_tokens, "band_layers": case.band,
                       "additive_scale": case.scale, "cap_thresholds": case.thresholds,
                       "note": "tokens/s = prompts × new tokens / wall seconds of axes_lib.generation.generate "
                               "(prefill included), greedy, min_new_tokens = max_new_tokens"})
    ratios: dict[str, Any] = {}
    for label in (label for label in t if label != "unsteered"):
        ratios[f"{label}_vs_unsteered"] = t["unsteered"].min / t[label].min
        ratios[f"{label}_vs_unsteered_at_median"] = t["unsteered"].median / t[label].median
        ratios[f"{label}_vs_unsteered_median_round"] = statistics.median(
            u / s for u, s in zip(t["unsteered"].seconds, t[label].seconds, strict=True))
    return generation, ratios


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.generation", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-config", default="smollm2", choices=["smollm2", "qwen", "qwen-tiny"])
    p.add_argument("--tokenizer", default=None, help="SmolLM2 tokenizer folder for the random-weight configs")
    p.add_argument("--queries", type=int, default=5, help="queries x 9 personas: the prompt set (default 5, as benchmarks.run)")
    p.add_argument("--prompts", type=int, default=16, help="prompts in the generation batch (default 16)")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per prompt (default 64)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--out", default=None, help="default artifacts/bench/generation_{model}_{device}.json")
    args = p.parse_args(argv)
    if min(args.queries, args.prompts, args.tokens, args.repeats) < 1:
        p.error("--queries, --prompts, --tokens and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from axes_lib.activations import extract
    from axes_lib.io import code_version, write_json
    from benchmarks.run import TARGETS, log, machine_line
    from benchmarks.workload import build_workload, load_bench_model

    args = parse_args(argv)
    started = time.perf_counter()
    model, tok, desc = load_bench_model(args.model_config, args.device, tokenizer_dir=args.tokenizer)
    work = build_workload(tok, args.queries)
    assist, other = work.indices("assistant"), work.indices("non_assistant")
    acts = extract(model, tok, work.prompts, progress=False)  # untimed: the direction the interventions use
    case = make_case(work.prompts, acts, assist, other, args.prompts, args.tokens)
    timings, checks = timed_modes(model, tok, case, args.repeats, args.device, log)
    generation, ratios = summary(timings, case)
    target = TARGETS["steered_vs_unsteered"]
    results = {
        "machine": machine_line(args.device),
        "model": args.model_config, "model_description": desc, "device": args.device,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "generation": generation, "ratios": ratios,
        "targets": {f"{label}_vs_unsteered": {"target": target, "value": ratios[f"{label}_vs_unsteered"],
                                              "met": ratios[f"{label}_vs_unsteered"] >= target} for label in ("additive", "capped")},
        "correctness": checks,
        "timings": {name: t.summary(len(case.prompts) * case.new_tokens, "tokens") for name, t in timings.items()},
        "settings": {"repeats": args.repeats, "prompt_source": work.source},
        "manifest": {"code_version": code_version(), "seconds": round(time.perf_counter() - started, 1),
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:] if argv is None else argv},
    }
    out = Path(args.out or ROOT / "artifacts" / "bench" / f"generation_{args.model_config}_{args.device.replace(':', '')}.json")
    write_json(out, results)
    for key, value in ratios.items():
        log(f"   {key}: {value:.3f}")
    log(f">> wrote {out}")
    if out.parent == ROOT / "artifacts" / "bench":
        from benchmarks import report

        report.main(out.parent)
    return 0 if checks["same_token_count"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
