"""Benchmark axes_lib extraction and steering against repeng, steering-vectors, naive loops and a bare forward.

    python -m benchmarks.run                      # SmolLM2 on CPU, 45 prompts, 3 repeats
    python -m benchmarks.run --quick              # a small run (18 prompts, 2 repeats, short generation)
    python -m benchmarks.run --device cuda --model-config qwen   # Qwen2.5-3B-shaped random model, bf16

One process, one model, one prompt set. Every figure is a warm-up (on a small subset for extraction,
full shape for generation) followed by `--repeats` timed runs; min and median seconds are reported and
throughputs use the min (the least disturbed run on a shared machine). Results go to
`artifacts/bench/results.json` (other configurations get their own file name unless `--out` is given).
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # peers' progress bars; must be set before tqdm is imported

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from axes_lib.models import base_model
from benchmarks import generation as generation_bench
from benchmarks import measure, methods
from benchmarks.workload import FIXED_RESPONSES, build_workload, load_bench_model

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"extract_vs_fastest_peer": 2.5, "extract_vs_bare_forward": 0.9, "steered_vs_unsteered": 0.95}


def log(msg: str) -> None:
    print(msg, flush=True)


def machine_description(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(__import__("psutil").virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda"):
        desc["gpu"] = torch.cuda.get_device_name(0)
        desc["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    desc["env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    import transformers

    desc["transformers"] = transformers.__version__
    for pkg in ("repeng", "steering_vectors"):
        try:
            from importlib.metadata import version

            desc[pkg] = version(pkg.replace("_", "-"))
        except Exception:  # noqa: BLE001
            desc[pkg] = None
    return desc


def machine_line(device: str) -> str:
    """The results files' one-line machine name: the GPU (or CPU), logical CPUs and torch threads."""
    desc = machine_description(device)
    return f"{desc.get('gpu') or desc['cpu']}, {os.cpu_count()} logical CPUs, torch {torch.get_num_threads()} threads"


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over prompts and layers of |a - b| / |b| (vector norms over d_model)."""
    num = (a.double() - b.double()).norm(dim=-1)
    den = b.double().norm(dim=-1).clamp_min(1e-30)
    return float((num / den).max())


def cosines(d1: dict[int, torch.Tensor], d2: dict[int, torch.Tensor]) -> dict[int, float]:
    return {k: float(torch.nn.functional.cosine_similarity(d1[k].double(), d2[k].double(), dim=0)) for k in d1 if k in d2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small run: 2 queries (18 prompts), 2 repeats, 8x16 generation, repeng train checked")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--model-config", default="smollm2", choices=["smollm2", "qwen", "qwen-tiny"],
                   help="smollm2 (embedded, real weights) or a random-weight Qwen2.5-3B-shaped model (qwen) / its tiny CPU dry-run version")
    p.add_argument("--out", default=None, help="results JSON (default artifacts/bench/results.json for the default full run)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 3, quick 2)")
    p.add_argument("--queries", type=int, default=None, help="queries, round-robin over categories (default 5 -> x 9 personas = 45 prompts; quick 2). The persona "
                   "prompts are long (63-330 tokens), so on a 2-core CPU the peers take minutes per repeat at 45 prompts")
    p.add_argument("--gen-prompts", type=int, default=None, help="prompts in the generation batch (default 16, quick 8)")
    p.add_argument("--gen-tokens", type=int, default=None, help="new tokens per prompt, forced with min_new_tokens (default 64, quick 16)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="rows per batch of axes_lib's extract and of the bare forward it is compared with (extract's default 32); "
                        "a GPU wants more rows when prefix sharing leaves each row only a short suffix")
    p.add_argument("--response-tokens", type=int, default=32, help="max tokens of the responses used for response-mean")
    p.add_argument("--sv-batch-sizes", default="1,32", help="steering-vectors batch sizes to time (its default is 1)")
    p.add_argument("--skip-peers", action="store_true", help="do not time repeng / steering-vectors")
    p.add_argument("--repeng-train", action=argparse.BooleanOptionalAction, default=None,
                   help="also run repeng's ControlVector.train end to end once (default: only with --quick)")
    p.add_argument("--tokenizer", default=None,
                   help="folder with SmolLM2's tokenizer files for the random-weight configs (default: the embedded model's cache)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.queries = args.queries or (2 if args.quick else 5)
    if args.repeng_train is None:
        args.repeng_train = args.quick
    args.gen_prompts = args.gen_prompts or (8 if args.quick else 16)
    args.gen_tokens = args.gen_tokens or (16 if args.quick else 64)
    if args.repeats < 1 or args.queries < 1 or args.gen_prompts < 1 or args.gen_tokens < 1:
        p.error("--repeats, --queries, --gen-prompts and --gen-tokens must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available here (use --device cpu, e.g. with --model-config qwen-tiny)")
    if args.out is None:
        default = args.model_config == "smollm2" and args.device == "cpu" and not args.quick
        name = "results.json" if default else f"results_{args.model_config}_{args.device.replace(':', '')}{'_quick' if args.quick else ''}.json"
        args.out = str(ROOT / "artifacts" / "bench" / name)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    from axes_lib.activations import extract
    from axes_lib.directions import compute_direction
    from axes_lib.generation import generate
    from axes_lib.io import code_version, write_json

    log(f">> benchmark: model-config {args.model_config}, device {device}, repeats {args.repeats}{' (quick)' if args.quick else ''}")
    t0 = time.perf_counter()
    model, tok, model_desc = load_bench_model(args.model_config, device, tokenizer_dir=args.tokenizer)
    load_seconds = time.perf_counter() - t0
    dtype = next(model.parameters()).dtype
    n_layers = model.config.num_hidden_layers
    base = base_model(model)
    fp32 = dtype == torch.float32
    # bf16 (GPU): batching and kernels change rounding at ~1e-2 per layer, so the checks are sanity checks there.
    tol = {"activation_rel": 1e-4 if fp32 else 1e-1, "direction_cosine": 0.999 if fp32 else 0.99}

    work = build_workload(tok, args.queries)
    prompts = work.prompts
    n = len(prompts)
    assist, other = work.indices("assistant"), work.indices("non_assistant")
    pairs = work.pairs()
    pair_strings = [s for a, b in pairs for s in (prompts[a], prompts[b])]
    prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    lengths = [len(t) for t in prompt_ids]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    log(f">> {n} prompts ({len(assist)} assistant, {len(other)} non-assistant; {work.source}); "
        f"tokens min/mean/max {min(lengths)}/{sum(lengths) / n:.0f}/{max(lengths)}; {len(pairs)} pairs for the peers; "
        f"{n_layers} layers; model load {load_seconds:.1f} s")

    # Machine's matmul rate, the denominator of FLOP efficiency: measured at the start and again at the end,
    # and the faster of the two is used (a shared machine can be busier at one of them).
    def matmul_rate() -> dict[str, Any]:
        if device.startswith("cuda"):
            return measure.matmul_throughput(device, dtype, n=8192, reps=20)
        return measure.matmul_throughput(device, torch.float32, n=2048, reps=10)

    mm_start = matmul_rate()
    log(f">> matmul {mm_start['n']}x{mm_start['n']} {mm_start['dtype']}: {mm_start['gflop_per_s']} GFLOP/s")

    timings: dict[str, measure.Timing] = {}
    flops: dict[str, dict[str, Any]] = {}
    R = args.repeats
    warm_n = min(n, 16)
    warm_pairs = pairs[: min(len(pairs), 8)]

    def timed_group(steps: dict[str, tuple[Any, Any, bool]]) -> dict[str, measure.Timing]:
        """Time steps (fn, warm-up, count FLOPs?) with interleaved repeats; FLOPs counted from the last repeat."""
        counters: dict[str, measure.FlopCounter] = {}
        wrapped: dict[str, tuple[Any, Any]] = {}
        for name, (fn, warmup, count_flops) in steps.items():
            if count_flops:
                counter = counters[name] = measure.FlopCounter(base, n_layers)

                def fn(fn: Any = fn, counter: measure.FlopCounter = counter) -> Any:
                    counter.reset()
                    counter.enabled = True
                    try:
                        return fn()
                    finally:
                        counter.enabled = False
            wrapped[name] = (fn, warmup)
        log(">> " + ", ".join(steps) + (" (interleaved repeats)" if len(steps) > 1 else ""))
        try:
            result = measure.time_interleaved(wrapped, R, device, log)
            for name, counter in counters.items():
                flops[name] = counter.totals()
        finally:
            for counter in counters.values():
                counter.close()
        timings.update(result)
        return result

    def timed(name: str, fn: Any, warmup: Any, count_flops: bool = False) -> measure.Timing:
        return timed_group({name: (fn, warmup, count_flops)})[name]

    # ---------------------------------------------------------------- 1. last-token extraction, all layers
    B = args.batch_size
    ext = dict(method="last_token", progress=False, batch_size=B)
    bare_batches = methods.padded_batches(prompt_ids, B, 8192, pad_id)  # extract's max_batch_tokens default
    warm_batches = methods.padded_batches(prompt_ids[:warm_n], B, 8192, pad_id)
    group = timed_group({
        "axes_lib_extract": (lambda: extract(model, tok, prompts, share_prefix=True, **ext),
                             lambda: extract(model, tok, prompts[:warm_n], share_prefix=True, **ext), True),
        "axes_lib_extract_no_prefix_sharing": (lambda: extract(model, tok, prompts, share_prefix=False, **ext),
                                               lambda: extract(model, tok, prompts[:warm_n], share_prefix=False, **ext), True),
        "bare_forward": (lambda: methods.bare_forward(model, bare_batches), lambda: methods.bare_forward(model, warm_batches), True),
    })
    t_ax, t_ax_np, t_bare = group["axes_lib_extract"], group["axes_lib_extract_no_prefix_sharing"], group["bare_forward"]
    t_naive = timed("naive_last_token", lambda: methods.naive_last_token(model, prompt_ids),
                    lambda: methods.naive_last_token(model, prompt_ids[:warm_n]))
    peers_ok: dict[str, Any] = {}
    sv_sizes = [int(s) for s in args.sv_batch_sizes.split(",") if s.strip()]
    pair_texts = [(prompts[a], prompts[b]) for a, b in pairs]
    warm_texts = [(prompts[a], prompts[b]) for a, b in warm_pairs]
    if not args.skip_peers:
        for name, run in (
            ("repeng_batched_get_hiddens", lambda: timed(
                "repeng_batched_get_hiddens",
                lambda: methods.repeng_hiddens(model, tok, pair_strings, n_layers),
                lambda: methods.repeng_hiddens(model, tok, [s for p in warm_texts for s in p], n_layers))),
            *[(f"steering_vectors_bs{bs}", (lambda bs=bs: timed(
                f"steering_vectors_bs{bs}",
                lambda: methods.steering_vectors_train(model, tok, pair_texts, n_layers, batch_size=bs),
                lambda: methods.steering_vectors_train(model, tok, warm_texts, n_layers, batch_size=bs)))) for bs in sv_sizes],
        ):
            try:
                run()
                peers_ok[name] = True
            except Exception as exc:  # noqa: BLE001 - a peer failing is a result, not a crash
                peers_ok[name] = f"{type(exc).__name__}: {exc}"
                log(f"   {name} failed: {peers_ok[name]}")
    repeng_dirs, repeng_train_seconds = None, None
    if not args.skip_peers and args.repeng_train:
        # ControlVector.train end to end, once (extraction + one PCA per layer): shows the API runs here and what PCA adds.
        try:
            log(">> repeng ControlVector.train (pca_diff), one run, no warm-up")
            t0 = time.perf_counter()
            repeng_dirs = methods.repeng_train(model, tok, pair_texts, n_layers)
            measure.sync(device)
            repeng_train_seconds = time.perf_counter() - t0
            peers_ok["repeng_train"] = True
        except Exception as exc:  # noqa: BLE001
            repeng_dirs, repeng_train_seconds = None, None
            peers_ok["repeng_train"] = f"{type(exc).__name__}: {exc}"
            log(f"   repeng train failed: {peers_ok['repeng_train']}")

    # ---------------------------------------------------------------- correctness of last-token extraction
    acts = t_ax.result
    acts_np = t_ax_np.result
    acts_naive = t_naive.result
    final_norm = base.norm
    with torch.inference_mode():
        # transformers returns the last layer after the final norm: apply it to axes_lib's last layer to compare.
        acts_cmp = acts.clone()
        acts_cmp[:, -1] = final_norm(acts[:, -1].to(device=device, dtype=dtype)).float().cpu()
    checks: dict[str, Any] = {"tolerances": tol}
    checks["last_token_rel_err_prefix_vs_no_prefix"] = rel_error(acts, acts_np)
    checks["last_token_rel_err_axes_lib_vs_naive"] = rel_error(acts_cmp, acts_naive)
    checks["last_token_rel_err_no_prefix_vs_naive"] = rel_error(acts_cmp[:, :-1], acts_naive[:, :-1]) if n_layers > 1 else None
    d_ax = compute_direction(acts[assist], acts[other])
    d_naive = compute_direction(acts_naive[assist], acts_naive[other])
    d_ax_cmp = compute_direction(acts_cmp[assist], acts_cmp[other])
    cos_naive = cosines(d_ax_cmp, d_naive)
    checks["direction_cosine_axes_lib_vs_naive_min"] = min(cos_naive.values())
    ia = torch.tensor([a for a, _ in pairs])
    ib = torch.tensor([b for _, b in pairs])
    d_pairs = {layer: (acts[ia, layer] - acts[ib, layer]).double().mean(0).float() for layer in range(n_layers)}
    checks["pair_mean_diff_equals_mean_diff_cosine_min"] = min(cosines(d_ax, d_pairs).values())
    for bs in sv_sizes:
        tm = timings.get(f"steering_vectors_bs{bs}")
        if tm is not None and tm.result is not None:
            checks[f"direction_cosine_axes_lib_vs_steering_vectors_bs{bs}_min"] = min(cosines(d_pairs, tm.result).values())
    if repeng_dirs is not None:
        rc = cosines(d_ax, {k: torch.from_numpy(v) for k, v in repeng_dirs.items()})
        checks["repeng_pca_diff_abs_cosine_with_mean_diff_info"] = {
            "min": min(abs(v) for v in rc.values()), "median": sorted(abs(v) for v in rc.values())[len(rc) // 2],
            "note": "PC1 of pair differences is a different quantity: information only, no threshold"}
    last_pass = (checks["last_token_rel_err_prefix_vs_no_prefix"] <= tol["activation_rel"]
                 and checks["last_token_rel_err_axes_lib_vs_naive"] <= tol["activation_rel"]
                 and checks["direction_cosine_axes_lib_vs_naive_min"] >= tol["direction_cosine"]
                 and all(v >= tol["direction_cosine"] for k, v in checks.items() if k.startswith("direction_cosine_axes_lib_vs_steering")))
    checks["last_token_pass"] = last_pass
    for name in [k for k in timings]:
        if name not in ("axes_lib_extract",):
            timings[name].result = None  # free memory before the next steps

    # ---------------------------------------------------------------- 2. response-mean extraction
    real_weights = args.model_config == "smollm2"
    t0 = time.perf_counter()
    if real_weights:
        log(f">> generating {n} responses ({args.response_tokens} tokens max, greedy) for response-mean (untimed)")
        responses = generate(model, tok, prompts, max_new_tokens=args.response_tokens, batch_size=32)
        responses = [r if r.strip() else "OK." for r in responses]
    else:
        responses = [FIXED_RESPONSES[i % len(FIXED_RESPONSES)] for i in range(n)]
    responses_seconds = time.perf_counter() - t0
    response_ids = tok(responses, add_special_tokens=False)["input_ids"]
    resp_len = [len(r) for r in response_ids]
    rm = dict(method="response_mean", responses=responses, progress=False, batch_size=B)
    full_ids = [p + r for p, r in zip(prompt_ids, response_ids, strict=True)]
    rm_bare_batches = methods.padded_batches(full_ids, B, 8192, pad_id)
    rm_warm_batches = methods.padded_batches(full_ids[:warm_n], B, 8192, pad_id)
    group = timed_group({
        "axes_lib_extract_response_mean": (
            lambda: extract(model, tok, prompts, **rm),
            lambda: extract(model, tok, prompts[:warm_n], method="response_mean", responses=responses[:warm_n], progress=False, batch_size=B), True),
        "bare_forward_response_mean": (lambda: methods.bare_forward(model, rm_bare_batches),
                                       lambda: methods.bare_forward(model, rm_warm_batches), True),
        "naive_response_mean": (lambda: methods.naive_response_mean(model, prompt_ids, response_ids),
                                lambda: methods.naive_response_mean(model, prompt_ids[:warm_n], response_ids[:warm_n]), False),
    })
    t_rm, t_rm_naive = group["axes_lib_extract_response_mean"], group["naive_response_mean"]
    t_rm_bare = group["bare_forward_response_mean"]
    rm_layers = n_layers - 1 if n_layers > 1 else n_layers  # the naive last entry is post-norm: not comparable for a mean
    checks["response_mean_rel_err_axes_lib_vs_naive"] = rel_error(t_rm.result[:, :rm_layers], t_rm_naive.result[:, :rm_layers])
    checks["response_mean_layers_compared"] = rm_layers
    rd1 = compute_direction(t_rm.result[assist][:, :rm_layers], t_rm.result[other][:, :rm_layers])
    rd2 = compute_direction(t_rm_naive.result[assist][:, :rm_layers], t_rm_naive.result[other][:, :rm_layers])
    checks["response_mean_direction_cosine_min"] = min(cosines(rd1, rd2).values())
    checks["response_mean_pass"] = (checks["response_mean_rel_err_axes_lib_vs_naive"] <= tol["activation_rel"]
                                    and checks["response_mean_direction_cosine_min"] >= tol["direction_cosine"])
    t_rm.result = t_rm_naive.result = t_rm_bare.result = None

    # ---------------------------------------------------------------- 3. generation: unsteered, additive, capped
    case = generation_bench.make_case(prompts, acts, assist, other, args.gen_prompts, args.gen_tokens)
    G, T = len(case.prompts), case.new_tokens
    gen_timings, gen_checks = generation_bench.timed_modes(model, tok, case, R, device, log)
    timings.update(gen_timings)
    generation, gen_ratios = generation_bench.summary(gen_timings, case)

    # ---------------------------------------------------------------- figures, ratios, table
    mm_end = matmul_rate()
    log(f">> matmul again: {mm_end['gflop_per_s']} GFLOP/s")
    mm = dict(max(mm_start, mm_end, key=lambda m: m["flop_per_s"]),
              gflop_per_s_at_start=mm_start["gflop_per_s"], gflop_per_s_at_end=mm_end["gflop_per_s"])
    def per_s(t: measure.Timing | None, units: float, at: str = "min") -> float | None:
        if t is None or not t.seconds:
            return None
        return units / (t.min if at == "min" else t.median)

    def eff(name: str) -> float | None:
        t = timings.get(name)
        if t is None or name not in flops:
            return None
        return flops[name]["model_flops"] / t.min / mm["flop_per_s"]

    peer_names = ["repeng_batched_get_hiddens"] + [f"steering_vectors_bs{bs}" for bs in sv_sizes]
    peer_times = {k: timings[k] for k in peer_names if k in timings}
    sv_best = min((timings[f"steering_vectors_bs{bs}"] for bs in sv_sizes if f"steering_vectors_bs{bs}" in timings),
                  key=lambda t: t.min, default=None)
    extract_lt = {
        "axes_lib_prompts_per_s": per_s(t_ax, n),
        "axes_lib_no_prefix_sharing_prompts_per_s": per_s(t_ax_np, n),
        "bare_forward_prompts_per_s": per_s(t_bare, n),
        "axes_lib_flop_efficiency": eff("axes_lib_extract"),
        "axes_lib_no_prefix_sharing_flop_efficiency": eff("axes_lib_extract_no_prefix_sharing"),
        "bare_forward_flop_efficiency": eff("bare_forward"),
        "naive_prompts_per_s": per_s(t_naive, n),
        "repeng_prompts_per_s": per_s(timings.get("repeng_batched_get_hiddens"), n),
        "steering_vectors_prompts_per_s": per_s(sv_best, n),
        "steering_vectors_best_batch_size": int(sv_best.name.rsplit("bs", 1)[1]) if sv_best else None,
        **{f"steering_vectors_bs{bs}_prompts_per_s": per_s(timings.get(f"steering_vectors_bs{bs}"), n) for bs in sv_sizes},
        "repeng_train_seconds_single_run": repeng_train_seconds,
        "peer_sequences_forwarded": len(pair_strings),
        "note": ("prompts/s = the prompt set's size / the min seconds to get its activations (axes_lib, naive, bare) or "
                 "its direction (peers, which forward (assistant, other) pairs: each assistant prompt twice). "
                 "repeng is timed on repeng.extract.batched_get_hiddens (its extraction inside ControlVector.train, "
                 "batch 32), steering-vectors on train_steering_vector (mean aggregator, read_token_index=-1, all layers). "
                 "naive = one prompt at a time through the full model with output_hidden_states=True."),
    }
    extract_rm = {
        "axes_lib_prompts_per_s": per_s(t_rm, n),
        "bare_forward_prompts_per_s": per_s(t_rm_bare, n),
        "naive_prompts_per_s": per_s(t_rm_naive, n),
        "axes_lib_flop_efficiency": eff("axes_lib_extract_response_mean"),
        "bare_forward_flop_efficiency": eff("bare_forward_response_mean"),
        "response_tokens_mean": sum(resp_len) / n,
        "responses": "generated greedily by the model, untimed" if real_weights else "fixed text (random-weight model)",
        "responses_seconds": responses_seconds,
    }
    fastest_peer = min(peer_times.values(), key=lambda t: t.min, default=None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b not in (None, 0) else None

    ratios: dict[str, Any] = {
        "extract_vs_fastest_peer": ratio(per_s(t_ax, n), per_s(fastest_peer, n)),
        "extract_vs_fastest_peer_at_median": ratio(per_s(t_ax, n, "median"), per_s(fastest_peer, n, "median")),
        "fastest_peer": fastest_peer.name if fastest_peer else None,
        "extract_vs_fastest_peer_per_sequence": ratio(per_s(t_ax, n), per_s(fastest_peer, len(pair_strings))),
        "extract_vs_bare_forward": ratio(per_s(t_ax, n), per_s(t_bare, n)),
        "extract_vs_bare_forward_at_median": ratio(per_s(t_ax, n, "median"), per_s(t_bare, n, "median")),
        "extract_no_prefix_sharing_vs_bare_forward": ratio(per_s(t_ax_np, n), per_s(t_bare, n)),
        "extract_vs_naive": ratio(per_s(t_ax, n), per_s(t_naive, n)),
        "response_mean_vs_naive": ratio(per_s(t_rm, n), per_s(t_rm_naive, n)),
        "response_mean_vs_bare_forward": ratio(per_s(t_rm, n), per_s(t_rm_bare, n)),
        **gen_ratios,
    }
    targets = {
        "extract_vs_fastest_peer": {"target": TARGETS["extract_vs_fastest_peer"], "value": ratios["extract_vs_fastest_peer"]},
        "extract_vs_bare_forward": {"target": TARGETS["extract_vs_bare_forward"], "value": ratios["extract_vs_bare_forward"]},
        "response_mean_vs_bare_forward": {"target": TARGETS["extract_vs_bare_forward"], "value": ratios["response_mean_vs_bare_forward"]},
        "additive_vs_unsteered": {"target": TARGETS["steered_vs_unsteered"], "value": ratios["additive_vs_unsteered"]},
        "capped_vs_unsteered": {"target": TARGETS["steered_vs_unsteered"], "value": ratios["capped_vs_unsteered"]},
    }
    for v in targets.values():
        v["met"] = v["value"] is not None and v["value"] >= v["target"]

    units = {"axes_lib_extract": n, "axes_lib_extract_no_prefix_sharing": n, "bare_forward": n, "naive_last_token": n,
             **{k: n for k in peer_names}, "axes_lib_extract_response_mean": n, "bare_forward_response_mean": n, "naive_response_mean": n,
             **{f"generate_{label}": G * T for label in ("unsteered", "additive", "capped")}}
    raw = {name: t.summary(units.get(name), "tokens" if name.startswith("generate") else "prompts") for name, t in timings.items()}
    for name, f in flops.items():
        raw[name]["flops"] = f
        raw[name]["achieved_gflop_per_s"] = round(f["model_flops"] / timings[name].min / 1e9, 2)
    results = {
        "machine": machine_line(device),
        "model": args.model_config,
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "extract_last_token": extract_lt,
        "extract_response_mean": extract_rm,
        "generation": generation,
        "ratios": ratios,
        "targets": targets,
        "correctness": {**checks, "generation": gen_checks},
        "timings": raw,
        "matmul": {k: v for k, v in mm.items()},
        "memory_note": measure.__doc__.split("\n\n")[1].replace("\n", " "),
        "flop_note": measure.FlopCounter.__doc__.replace("\n    ", " ").strip(),
        "peers": peers_ok,
        "settings": {
            "prompts": n, "assistant_prompts": len(assist), "non_assistant_prompts": len(other),
            "queries": len(dict.fromkeys(work.query_ids)), "personas": sorted(set(work.personas)),
            "prompt_source": work.source,
            "prompt_tokens": {"min": min(lengths), "mean": sum(lengths) / n, "max": max(lengths), "total": sum(lengths)},
            "layers": n_layers, "repeats": R, "warmup": f"extraction: one run on the first {warm_n} prompts ({len(warm_pairs)} pairs for peers); "
            "generation: one full-shape run", "extract_settings": {"batch_size": B, "max_batch_tokens": 8192, "min_prefix": 16},
            "quick": args.quick, "model_description": model_desc,
            "throughput_basis": "min seconds of the repeats (median also given in timings and *_at_median ratios)",
        },
        "machine_details": machine_description(device),
        "manifest": {"code_version": code_version(), "seconds": round(time.perf_counter() - t_start, 1),
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:], "model_load_seconds": load_seconds,
                     "load_average_1_5_15_min_at_start": load_before,
                     "load_average_1_5_15_min_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
    }
    out = Path(args.out)
    write_json(out, results)
    print_table(results)
    log(f">> wrote {out} in {results['manifest']['seconds']:.0f} s")
    if out.parent == ROOT / "artifacts" / "bench" and not args.quick:
        from benchmarks import report

        report.main(out.parent)
    ok = checks["last_token_pass"] and checks["response_mean_pass"] and gen_checks["same_token_count"]
    if not ok:
        log(">> CORRECTNESS CHECK FAILED (see 'correctness' in the results)")
    return 0 if ok else 1


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(r: dict[str, Any]) -> None:
    t = r["timings"]
    print()
    print(f"Benchmark: {r['model']} on {r['device']} ({r['dtype']}), {r['machine']}")
    print(f"{r['settings']['prompts']} prompts, {r['settings']['layers']} layers, {r['settings']['repeats']} repeats; "
          f"matmul {r['matmul']['gflop_per_s']} GFLOP/s")
    print(f"{'step':40s} {'min s':>8s} {'median s':>9s} {'per s':>10s} {'peak RSS MiB':>13s} {'+RSS MiB':>9s}")
    for name, s in t.items():
        unit = "tokens" if name.startswith("generate") else "prompts"
        rate = s.get(f"{unit}_per_s_at_min")
        print(f"{name:40s} {s['seconds_min']:8.2f} {s['seconds_median']:9.2f} {_f(rate):>10s} "
              f"{s['peak_rss_mib']:13.0f} {s['peak_rss_increase_mib']:9.0f}"
              + (f"  cuda peak {s['peak_cuda_allocated_mib']:.0f} MiB" if "peak_cuda_allocated_mib" in s else ""))
    e = r["extract_last_token"]
    print(f"FLOP efficiency (model FLOPs / s ÷ matmul rate): axes_lib {_f(e['axes_lib_flop_efficiency'], '{:.0%}')}, "
          f"no prefix sharing {_f(e['axes_lib_no_prefix_sharing_flop_efficiency'], '{:.0%}')}, "
          f"bare forward {_f(e['bare_forward_flop_efficiency'], '{:.0%}')}")
    print("Targets:")
    for k, v in r["targets"].items():
        print(f"  {k:28s} {_f(v['value']):>6s}  (target >= {v['target']})  {'MET' if v['met'] else 'MISSED'}")
    ra = r["ratios"]
    print(f"  (fastest peer: {ra['fastest_peer']}; per forwarded sequence {_f(ra['extract_vs_fastest_peer_per_sequence'])}x; "
          f"no prefix sharing vs bare {_f(ra['extract_no_prefix_sharing_vs_bare_forward'])}x; vs naive {_f(ra['extract_vs_naive'])}x; "
          f"response-mean vs naive {_f(ra['response_mean_vs_naive'])}x)")
    c = r["correctness"]
    print(f"Correctness: last-token {'PASS' if c['last_token_pass'] else 'FAIL'} "
          f"(rel err prefix/no-prefix {c['last_token_rel_err_prefix_vs_no_prefix']:.1e}, vs naive {c['last_token_rel_err_axes_lib_vs_naive']:.1e}, "
          f"cos vs naive {c['direction_cosine_axes_lib_vs_naive_min']:.6f}"
          + "".join(f", {k.split('vs_')[1].replace('_min', '')} {v:.6f}" for k, v in c.items() if k.startswith("direction_cosine_axes_lib_vs_steering"))
          + f"); response-mean {'PASS' if c['response_mean_pass'] else 'FAIL'} (rel err {c['response_mean_rel_err_axes_lib_vs_naive']:.1e}); "
          f"generation same token count: {c['generation']['same_token_count']}")


if __name__ == "__main__":
    sys.exit(main())
