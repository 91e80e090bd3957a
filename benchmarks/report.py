"""Render the benchmark results for the book: a Markdown table per results file and one bar chart of ratios.

    python -m benchmarks.report          # reads artifacts/bench/results*.json, writes report.md and ratios.png

`benchmarks.run` calls this after every run, so the appendix always shows what the last runs measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "artifacts" / "bench"

# (label, section, key, unit) rows of the table; a missing value prints as "-".
ROWS = [
    ("last-token extraction: axes_lib", "extract_last_token", "axes_lib_prompts_per_s", "prompts/s"),
    ("  the same without prefix sharing", "extract_last_token", "axes_lib_no_prefix_sharing_prompts_per_s", "prompts/s"),
    ("  bare forward of the base model (no capture)", "extract_last_token", "bare_forward_prompts_per_s", "prompts/s"),
    ("  naive loop, output_hidden_states", "extract_last_token", "naive_prompts_per_s", "prompts/s"),
    ("  repeng (batched_get_hiddens)", "extract_last_token", "repeng_prompts_per_s", "prompts/s"),
    ("  steering-vectors (best batch size)", "extract_last_token", "steering_vectors_prompts_per_s", "prompts/s"),
    ("  axes_lib FLOP efficiency", "extract_last_token", "axes_lib_flop_efficiency", "of matmul peak"),
    ("  bare forward FLOP efficiency", "extract_last_token", "bare_forward_flop_efficiency", "of matmul peak"),
    ("response-mean extraction: axes_lib", "extract_response_mean", "axes_lib_prompts_per_s", "prompts/s"),
    ("  bare forward over prompt + response", "extract_response_mean", "bare_forward_prompts_per_s", "prompts/s"),
    ("  naive loop, one prompt at a time", "extract_response_mean", "naive_prompts_per_s", "prompts/s"),
    ("generation: unsteered", "generation", "unsteered_tokens_per_s", "tokens/s"),
    ("  additive steering", "generation", "additive_tokens_per_s", "tokens/s"),
    ("  activation capping", "generation", "capped_tokens_per_s", "tokens/s"),
    ("  unsteered, no cascade attention", "generation", "prefix_copies_tokens_per_s", "tokens/s"),
    ("  unsteered, cascade attention", "generation", "cascade_tokens_per_s", "tokens/s"),
]
#: The fourth generation mode: the attention over shared prefixes that is not the device's default.
OTHER_ATTENTION = {"prefix_copies": "unsteered, no cascade attention", "cascade": "unsteered, cascade attention"}
RATIOS = [
    ("extract_vs_fastest_peer", "extraction ÷ fastest peer"),
    ("extract_vs_bare_forward", "extraction ÷ bare forward"),
    ("extract_vs_naive", "extraction ÷ naive loop"),
    ("response_mean_vs_naive", "response-mean ÷ naive loop"),
    ("response_mean_vs_bare_forward", "response-mean ÷ bare forward"),
    ("additive_vs_unsteered", "additive ÷ unsteered generation"),
    ("capped_vs_unsteered", "capped ÷ unsteered generation"),
]


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "of matmul peak":
        return f"{100 * value:.1f} %"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def title(result: dict[str, Any]) -> str:
    peers = "" if result.get("peers") else ", peers not run"
    return f"{result['model']} on {result['device']} ({result['dtype']}{peers}), {result['manifest']['created'][:16]}"


def _batch(result: dict[str, Any]) -> str:
    """Extraction batch size and generation batch, where the results file records them."""
    ext = result["settings"].get("extract_settings") or result["settings"].get("extract_defaults") or {}
    gen = result.get("generation") or {}
    parts = [f"extraction batches of {ext['batch_size']} rows" if "batch_size" in ext else "",
             f"generation {gen['prompts']} prompts × {gen['new_tokens_per_prompt']} tokens" if "prompts" in gen else ""]
    return "".join(f"{p}, " for p in parts if p)


def table(result: dict[str, Any]) -> str:
    """One results file as a Markdown section: settings, throughputs, targets and correctness."""
    s, c = result["settings"], result["correctness"]
    lines = [
        f"## {title(result)}",
        "",
        f"{result['machine']}; {s['prompts']} prompts ({s['queries']} queries × {len(s['personas'])} personas), "
        f"{s['layers']} layers, {_batch(result)}{s['repeats']} timed repeats after a warm-up, throughput from the fastest repeat; "
        f"matmul rate {result['matmul']['gflop_per_s']:,.0f} GFLOP/s; code {result['manifest']['code_version']}, "
        f"{result['manifest']['created']}.",
        "",
        "| what | rate | unit |",
        "| --- | ---: | --- |",
    ]
    for label, section, key, unit in ROWS:
        lines.append(f"| {label} | {_fmt(result[section].get(key), unit)} | {unit} |")
    lines += ["", "| target | measured | goal | met |", "| --- | ---: | ---: | --- |"]
    for key, target in result["targets"].items():
        value = target["value"]
        lines.append(f"| {key.replace('_', ' ')} | {'-' if value is None else f'{value:.2f}×'} | "
                     f"≥ {target['target']}× | {'yes' if target['met'] else 'no'} |")
    gen = c.get("generation", {})
    steps = {v for k, v in gen.items() if k.endswith("_forward_calls")}
    lines += [
        "",
        f"Correctness: last-token activations {'pass' if c['last_token_pass'] else 'FAIL'} (largest relative error "
        f"against the naive loop {c['last_token_rel_err_axes_lib_vs_naive']:.1e}, smallest direction cosine "
        f"{c['direction_cosine_axes_lib_vs_naive_min']:.6f}); response-mean {'pass' if c['response_mean_pass'] else 'FAIL'} "
        f"(relative error {c['response_mean_rel_err_axes_lib_vs_naive']:.1e}); every generation mode "
        f"ran {'the same number of' if len(steps) == 1 else 'DIFFERENT numbers of'} decoding steps "
        f"({', '.join(str(x) for x in sorted(steps, key=str))}).",
        "",
    ]
    return "\n".join(lines)


def generation_table(result: dict[str, Any]) -> str:
    """A generation-only run (`benchmarks.generation`): rates per mode and three estimates of each ratio."""
    g, r, c = result["generation"], result["ratios"], result["correctness"]
    lines = [
        f"## Generation only: {result['model']} on {result['device']} ({result['dtype']}), {result['manifest']['created'][:16]}",
        "",
        f"{result['machine']}; {g['prompts']} prompts × {g['new_tokens_per_prompt']} new tokens, layers {g['band_layers']}, "
        f"{result['settings']['repeats']} interleaved rounds after a warm-up; code {result['manifest']['code_version']}.",
        "",
        "| mode | tokens/s (fastest run) | ÷ unsteered, fastest runs | ÷ unsteered, median runs | ÷ unsteered, median of rounds |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| unsteered | {_fmt(g['unsteered_tokens_per_s'], '')} | | | |",
    ]
    names = (("additive", "additive steering"), ("capped", "activation capping"), *OTHER_ATTENTION.items())
    for label, name in names:
        if f"{label}_vs_unsteered" in r:  # files from before the cascade comparison lack the last row
            lines.append(f"| {name} | {_fmt(g[f'{label}_tokens_per_s'], '')} | {r[f'{label}_vs_unsteered']:.2f}× | "
                         f"{r[f'{label}_vs_unsteered_at_median']:.2f}× | {r[f'{label}_vs_unsteered_median_round']:.2f}× |")
    same = "the same number of" if c["same_token_count"] else "DIFFERENT numbers of"
    lines += ["", f"All modes ran {same} decoding steps; the target is ≥ "
              f"{result['targets']['additive_vs_unsteered']['target']}× for the fastest runs (steered ÷ unsteered)."]
    lines += [_attention_sentence(c)]
    lines.append("")
    return "\n".join(lines)


def _attention_sentence(c: dict[str, Any]) -> str:
    """What the fourth mode changed, and how many greedy outputs it left identical."""
    if "prefix_copies_outputs_equal" in c:
        return (f"Without cascade attention (`generate(..., cascade=False)`) every row keeps its own copy of its "
                f"persona's prefix in the KV cache; {c['prefix_copies_outputs_equal']} of {c['prompts']} greedy "
                "outputs are identical to the default run's.")
    if "cascade_outputs_equal" in c:
        return (f"With cascade attention (`generate(..., cascade=True)`, off by default on a GPU) each prefix is "
                f"kept once per batch; {c['cascade_outputs_equal']} of {c['prompts']} greedy outputs are identical "
                "to the default run's (bfloat16 rounding flips near-ties of a random-weight model).")
    return ""


def chart(results: list[dict[str, Any]], path: Path) -> None:
    """Grouped horizontal bars: each ratio, one bar per results file, with the targets marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.55 * len(RATIOS) * max(1, len(results))))
    height = 0.8 / max(1, len(results))
    for i, result in enumerate(results):
        values = [result["ratios"].get(key) for key, _ in RATIOS]  # None: not measured in that run
        ys = [j + i * height for j in range(len(RATIOS))]
        bars = ax.barh(ys, [float("nan") if v is None else v for v in values], height=height, label=title(result))
        ax.bar_label(bars, labels=["" if v is None else f"{v:.2f}×" for v in values], padding=3, fontsize=8)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(RATIOS))], [label for _, label in RATIOS])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("speed ratio (log scale; > 1 means the first is faster)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(folder: Path = BENCH) -> int:
    files = sorted(p for p in folder.glob("results*.json") if "quick" not in p.name)
    if not files:
        print(f"no results*.json in {folder}: run `make bench` first", file=sys.stderr)
        return 1
    results = [json.loads(p.read_text()) for p in files]
    generation_only = [json.loads(p.read_text()) for p in sorted(folder.glob("generation_*.json"))]
    text = "\n".join([*(table(r) for r in results), *(generation_table(r) for r in generation_only)])
    (folder / "report.md").write_text(text)
    chart(results, folder / "ratios.png")
    print(f">> wrote {folder / 'report.md'} and {folder / 'ratios.png'} from {', '.join(p.name for p in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
