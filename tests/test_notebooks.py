"""Smoke runs of the book's notebooks: papermill executes each at tiny scale, in order, into a scratch
folder (`$AXES_SMOKE_DIR`, else a temp dir), and we check the artifacts each step wrote.

`make test` then builds the book from these smoke outputs with warnings as errors (book-smoke).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from axes_lib.prompts import load_personas

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
KEY = "smollm2"
SMOKE = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())  # the smoke profile's parameters


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> Path:
    """Execute every notebook once at smoke scale; returns the scratch root (book/ + artifacts/)."""
    import jupytext
    import papermill as pm

    root = Path(os.environ.get("AXES_SMOKE_DIR") or tmp_path_factory.mktemp("smoke"))
    shutil.rmtree(root, ignore_errors=True)
    (root / "book").mkdir(parents=True)
    params = {**SMOKE, "artifacts_dir": str(root / "artifacts")}
    for source in NOTEBOOKS:
        notebook = root / "src" / f"{source.stem}.ipynb"
        notebook.parent.mkdir(exist_ok=True)
        jupytext.write(jupytext.read(source), notebook)
        pm.execute_notebook(notebook, root / "book" / notebook.name, parameters=params, kernel_name="python3",
                            cwd=str(ROOT), progress_bar=False)
    # What the book build needs beside the executed notebooks.
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    for page in (ROOT / "book").glob("*.md"):
        shutil.copy(page, root / "book" / page.name)
    for folder in (ROOT / "book").iterdir():  # the second model's executed notebooks, as committed
        if folder.is_dir() and not folder.name.startswith((".", "_")):
            shutil.copytree(folder, root / "book" / folder.name)
    shutil.copytree(ROOT / "artifacts" / "bench", root / "artifacts" / "bench")  # measured by `make bench`, not here
    return root


def _glued(notebook: Path) -> dict[str, object]:
    """The glue keys a notebook wrote (myst-nb stores them as display outputs with a scrapbook marker)."""
    keys = {}
    for cell in json.loads(notebook.read_text())["cells"]:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook", {})
            if "name" in meta:
                data = out.get("data", {})
                keys[meta["name"]] = next((v for k, v in data.items() if k.endswith("text/plain")), None)
    return keys


def test_every_notebook_ran(smoke):
    executed = sorted(p.stem for p in (smoke / "book").glob("*.ipynb"))
    assert executed == [p.stem for p in NOTEBOOKS]


def test_contrastive_data(smoke):
    rows = [json.loads(line) for line in (smoke / "artifacts/responses" / f"{KEY}_responses.jsonl").open()]
    pairs = {(r["persona"], r["query_id"]) for r in rows}
    n = SMOKE["n_queries"]
    assert len(pairs) == len(rows) == n * 9  # smoke: n queries x 9 personas, no duplicates
    manifest = json.loads((smoke / "artifacts/responses" / f"{KEY}_responses.manifest.json").read_text())
    assert manifest["complete"] and manifest["params"]["n_queries"] == n
    assert _glued(smoke / "book/01_contrastive_data.ipynb")["n_responses"] == str(n * 9)


def test_directions_and_evaluations(smoke):
    import torch

    from axes_lib.directions import load_direction_with_metadata

    for method in ("last_token", "response_mean"):
        direction, meta = load_direction_with_metadata(smoke / "artifacts/directions" / f"{KEY}_{method}.safetensors")
        assert sorted(direction) == list(range(30)) and meta["method"] == method
        assert all(torch.isfinite(v).all() and v.shape == (576,) for v in direction.values())
        evaluation = json.loads((smoke / "artifacts/evaluations" / f"direction_eval_{KEY}_{method}.json").read_text())
        test = evaluation["query_split"]["test"]
        assert len(test["cohens_d"]) == 30 and evaluation["best_layer"] in range(30)
        assert all(lo <= d <= hi for lo, d, hi in zip(test["cohens_d_low"], test["cohens_d"], test["cohens_d_high"]))
        assert evaluation["capping"]["layers"] and set(evaluation["capping"]["thresholds"]) == {
            str(i) for i in evaluation["capping"]["layers"]}
        # The controls ran at the smoke scale and were stored with their ranks.
        col = evaluation["best_layer"]
        assert evaluation["partition_null"]["n_partitions"] == 84
        assert 1 <= evaluation["partition_null"]["rank_cohens_d"]["rank"][col] <= 84
        assert evaluation["random_directions"]["n"] == SMOKE["n_random_separation"]
        assert len(evaluation["shuffled_null"]["max_abs_cohens_d"]) == SMOKE["n_perm"]
        assert sorted(evaluation["leave_one_persona_out"]["on_own_side"]) == sorted(
            p.name for p in load_personas())
        two = evaluation["two_way_interval"]
        assert two["cohens_d_low"][col] <= test["cohens_d"][col] <= two["cohens_d_high"][col]
        assert "another prompt format" in evaluation["query_split"]["selection"]["rule"]
        assert set(evaluation["prompt_formats"]["transfer"]) == {"matched", "one_sentence"}
    for layout in ("matched", "one_sentence"):
        rows = [json.loads(x) for x in (smoke / "artifacts/responses" / f"{KEY}_responses_{layout}.jsonl").open()]
        n = SMOKE["layout_train_queries"] + SMOKE["layout_holdout_queries"]
        assert len(rows) == 9 * n and len({r["id"] for r in rows}) == len(rows)
    filters = json.loads((smoke / "artifacts/evaluations" / f"{KEY}_answer_filters.json").read_text())
    assert set(filters["refits"]) == {"all answers", "without loops", "in role only"}
    for figure in ("direction_discovery", "layer_comparison", "projection_stats", "controls_by_layer", "format_transfer"):
        _drawn(smoke / "artifacts/figures" / f"{figure}.png")


def test_no_query_in_train_and_holdout(smoke):
    split = json.loads((smoke / "artifacts/evaluations" / f"{KEY}_split.json").read_text())
    assert split["train_queries"] and split["holdout_queries"]
    assert not set(split["train_queries"]) & set(split["holdout_queries"])


def test_sweeps_store_answers_for_the_judge(smoke):
    split = json.loads((smoke / "artifacts/evaluations" / f"{KEY}_split.json").read_text())
    n_holdout = min(len(split["holdout_queries"]), SMOKE["n_holdout_queries"])
    additive = [json.loads(x) for x in (smoke / "artifacts/responses" / f"{KEY}_additive.jsonl").open()]
    assert {r["setting"] for r in additive} == {"add:0", "add:20", "add_sd:2"}
    assert len(additive) == 3 * 6 * n_holdout and all(r["kind"] == "non_assistant" for r in additive)
    capping = [json.loads(x) for x in (smoke / "artifacts/responses" / f"{KEY}_capping.jsonl").open()]
    summary = json.loads((smoke / "artifacts/evaluations" / f"capping_{KEY}_response_mean.json").read_text())
    bands = summary["bands"]  # disjoint depth bands, and step 4's only where it shares no layer with them
    assert set(bands) == {"early", "middle", "late"} | (set() if summary["step4_shares"] else {"best"})
    layers = [i for band in bands.values() for i in band]
    assert len(layers) == len(set(layers))
    want = {"uncapped"} | {f"cap:{b}:p{q}{v}" for b in bands for q, v in ((25, ""), *((q, ":response") for q in
                                                                                     SMOKE["response_percentiles"]))}
    assert {r["setting"] for r in capping} == want
    for r in capping:
        if r["setting"] != "uncapped":
            fired = r["stats"]["fraction_fired_prompt"]
            assert r["layers"] == bands[r["band"]] and (r["positions"] == "response") == r["setting"].endswith(":response")
            assert all(v == 0 for v in fired.values()) if r["positions"] == "response" else any(v > 0 for v in fired.values())


def test_judge_scores_every_answer(smoke):
    """Step 7 judged every answer of steps 5 and 6 (offline at smoke scale) and drew both figures."""
    from axes_lib.judge import VERSION, text_key

    art = smoke / "artifacts"
    answers = [json.loads(x) for name in ("additive", "additive_assistant", "capping", "capping_assistant")
               for x in (art / "responses" / f"{KEY}_{name}.jsonl").open()]
    judged = [json.loads(x) for x in (art / "evaluations" / f"judge_{KEY}_offline.jsonl").open()]
    by_key = {r["key"]: r for r in judged if r["judge"] == f"offline:{KEY}:{VERSION}"}
    assert {text_key(a["query"], a["response"]) for a in answers} <= set(by_key)
    assert all(0 <= r[s] <= 10 for r in by_key.values() for s in ("assistant_likeness", "coherence"))
    manifest = json.loads((art / "evaluations" / f"judge_{KEY}.manifest.json").read_text())
    assert manifest["complete"] and manifest["n_answers"] == len(answers) and manifest["n_missing"] == 0
    summary = json.loads((art / "evaluations" / f"judge_evaluation_{KEY}.json").read_text())
    likeness = summary["validation"]["assistant_likeness_holdout"]
    assert likeness["auroc_ci95"][0] <= likeness["auroc"] <= likeness["auroc_ci95"][1]
    gold = summary["validation"]["gold"][f"offline:{KEY}:{VERSION}"]
    for scale in ("assistant_likeness", "coherence"):  # the smoke judge's scores against the gold labels it was not fitted on
        assert gold[scale]["n"] > 0 and gold[scale]["spearman_ci95"][0] <= gold[scale]["spearman"] <= gold[scale]["spearman_ci95"][1]
    for figure in ("steering_evaluation", "capping_evaluation", "judge_gold"):
        _drawn(art / "figures" / f"{figure}.png")
    glued = _glued(smoke / "book/07_judge_evaluation.ipynb")
    assert glued["judge_name"] == "the offline judge" and "only the offline judge ran" in glued["judge_agreement"]
    for key in ("offline_auroc", "synthetic_normal", "synthetic_loop", "gold_coh_spearman", "gold_coh_v2_spearman",
                "add_sweet_scale", "cap_sweet_setting", "cap_answer", "cap_middle_all_gain"):
        assert glued[key] not in (None, "nan"), key


def test_specificity_controls(smoke):
    """Step 9 ran the axis and n_random random directions at step 7's chosen settings on its report-half queries,
    judged every answer, and ranked the axis among the random directions."""
    art = smoke / "artifacts"
    step7 = json.loads((art / "evaluations" / f"judge_evaluation_{KEY}.json").read_text())
    rows = [json.loads(x) for x in (art / "responses" / f"{KEY}_specificity.jsonl").open()]
    n = SMOKE["n_random"]
    modes = [m for m, pick in (("add", step7["additive"]["sweet_spot_raw"]), ("cap", step7["capping"]["sweet_spot"]))
             if pick and pick.get("band") != "none" and pick.get("scale") != 0]
    names = ["axis"] + [f"random{k:02d}" for k in range(n)]
    assert {r["setting"] for r in rows} == {"unsteered"} | {f"{d}:{m}" for d in names for m in modes}
    assert {r["query_id"] for r in rows} <= set(step7["additive"]["queries_report"])  # never the queries it chose on
    assert len({r["id"] for r in rows}) == 6 * SMOKE["n_control_queries"]
    summary = json.loads((art / "evaluations" / f"specificity_{KEY}_response_mean.json").read_text())
    assert summary["n_random"] == n and summary["orthogonal"] is True
    for mode in modes:
        axis = summary["effects"][f"axis:{mode}"]["assistant_likeness"]
        assert axis["low"] <= axis["mean"] <= axis["high"]
        assert summary["ranks"][mode]["assistant_likeness"]["n_controls"] == n
    if "cap" in modes:  # each direction capped at its own thresholds: no two alike
        assert len({json.dumps(t, sort_keys=True) for t in summary["capping"]["thresholds"].values()}) == n + 1
    _drawn(art / "figures" / "specificity.png")
    glued = _glued(smoke / "book/09_specificity.ipynb")
    for key in ("spec_n_random", "spec_add_al", "spec_cap_al_verdict", "spec_add_setting", "spec_cap_setting"):
        assert glued[key] not in (None, "nan"), key


def test_resume_keeps_finished_rows(smoke, tmp_path):
    """Notebook 01 rerun on a truncated output file regenerates only what is missing."""
    import jupytext
    import papermill as pm

    art = tmp_path / "artifacts"
    shutil.copytree(smoke / "artifacts" / "responses", art / "responses")
    path = art / "responses" / f"{KEY}_responses.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    keep = len(lines) - 6
    path.write_text("".join(lines[:keep]) + lines[keep][:20])  # finished rows and a torn line, as after a crash
    params = SMOKE | {"artifacts_dir": str(art)}
    nb = tmp_path / "01.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks/01_contrastive_data.py"), nb)
    pm.execute_notebook(nb, tmp_path / "out.ipynb", parameters=params, kernel_name="python3", cwd=str(ROOT),
                        progress_bar=False)
    rows = [json.loads(x) for x in path.open()]
    assert rows[:keep] == [json.loads(x) for x in lines[:keep]]
    assert len(rows) == len({(r["persona"], r["query_id"]) for r in rows}) == len(lines)


def test_changed_parameters_regenerate_and_unchanged_reuse(smoke, tmp_path):
    """Notebook 01 with another generation setting regenerates every answer (none is served stale); run again
    with the same setting, it generates nothing and leaves the file as it was."""
    import jupytext
    import papermill as pm

    art = tmp_path / "artifacts"
    shutil.copytree(smoke / "artifacts" / "responses", art / "responses")
    path = art / "responses" / f"{KEY}_responses.jsonl"
    before = [json.loads(x) for x in path.open()]
    nb = tmp_path / "01.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks/01_contrastive_data.py"), nb)

    def run():
        pm.execute_notebook(nb, tmp_path / "out.ipynb", parameters=SMOKE | {"artifacts_dir": str(art), "max_new_tokens": 4},
                            kernel_name="python3", cwd=str(ROOT), progress_bar=False)

    run()
    after = [json.loads(x) for x in path.open()]
    assert [r["id"] for r in after] == [r["id"] for r in before]
    assert not {r["fingerprint"] for r in after} & {r["fingerprint"] for r in before}
    shorter = sum(len(a["response"]) < len(b["response"]) for a, b in zip(after, before))
    assert shorter > len(before) // 2  # 4 tokens instead of 8: most answers are shorter
    stamp = path.stat().st_mtime_ns, path.read_bytes()
    run()
    assert (path.stat().st_mtime_ns, path.read_bytes()) == stamp


def _drawn(path):
    """A figure that was really drawn: a readable PNG of a plausible size that is not one flat colour."""
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= 200, image.shape
    assert float(image[..., :3].std()) > 0.02


def test_persona_space(smoke):
    """Step 10 at smoke scale: the bank's answers, one vector per role at every layer, the PC1 analysis with
    its null, and the figures."""
    from axes_lib.bank import load_bank
    from axes_lib.io import load_tensors

    roles = load_bank(n_per_family=SMOKE["n_per_family"])
    rows = [json.loads(x) for x in (smoke / "artifacts/responses" / f"{KEY}_bank.jsonl").open()]
    assert len(rows) == len(roles) * 3 * SMOKE["bank_queries"] and len({r["id"] for r in rows}) == len(rows)
    tensors, meta = load_tensors(smoke / "artifacts/directions" / f"{KEY}_persona_vectors.safetensors")
    names = meta["roles_all"].split(",")
    assert sorted(names) == sorted(r.name for r in roles if any(x["id"].startswith(r.name + "/") and x["response"].strip() for x in rows))
    assert tuple(tensors["all_answers"].shape) == (len(names), 30, 576)
    summary = json.loads((smoke / "artifacts/evaluations" / f"persona_space_{KEY}.json").read_text())
    analysis = summary["analyses"]["all answers"]
    assert len(analysis["cos_axis"]) == 30 and all(0 <= c <= 1 for c in analysis["cos_axis"])
    assert all(1 <= r <= SMOKE["n_null"] + 1 for r in analysis["rank_axis"])
    assert sorted(summary["ranking"]) == sorted(names)
    for figure in ("persona_space_pc1", "persona_space_map", "persona_space_ranking"):
        _drawn(smoke / "artifacts/figures" / f"{figure}.png")


def test_drift_and_costs(smoke):
    """Step 11 at smoke scale: every scripted conversation turn by turn in both settings, the costs of every
    setting (zero KL for the unsteered one), and the stress test judged in three settings."""
    from axes_lib.bank import DRIFT_DOMAINS

    drift = [json.loads(x) for x in (smoke / "artifacts/responses" / f"{KEY}_drift.jsonl").open()]
    assert sorted({(r["script"], r["turn"]) for r in drift}) == sorted((d, t + 1) for d in DRIFT_DOMAINS for t in range(SMOKE["drift_turns"]))
    assert len(drift) == len(DRIFT_DOMAINS) * 2 * SMOKE["drift_turns"] and all(np.isfinite(r["projection"]) for r in drift)
    summary = json.loads((smoke / "artifacts/evaluations" / f"side_effects_{KEY}.json").read_text())
    costs = {row["label"]: row for row in summary["costs"]}
    assert costs["unsteered"]["kl_neutral"] == 0 and costs["unsteered"]["qa"] == 100
    bands = json.loads((smoke / "artifacts/evaluations" / f"capping_{KEY}_response_mean.json").read_text())["bands"]
    assert {f"cap:{b}:p{q:g}" for b in bands for q in SMOKE["percentiles"]} <= set(costs)
    assert sum(row["kind"] == "additive" for row in costs.values()) == 1 and summary["cap"].removesuffix(":response") in costs
    assert all(row["kl_neutral_low"] <= row["kl_neutral"] <= row["kl_neutral_high"] for row in costs.values())
    stress = [json.loads(x) for x in (smoke / "artifacts/responses" / f"{KEY}_stress.jsonl").open()]
    assert len(stress) == 3 * SMOKE["n_stress"] and all(r["assistant_likeness"] is not None for r in stress)
    for figure in ("drift", "capping_costs"):
        _drawn(smoke / "artifacts/figures" / f"{figure}.png")


def test_two_models(smoke):
    """Step 12 compares the smoke run with the committed second model: every number it glues is the one the
    runs' own evaluation files hold, and its agreement count is the count of its table's agreeing rows."""
    glued = _glued(smoke / "book/12_two_models.ipynb")
    runs = {"first": smoke / "artifacts" / "evaluations" / f"direction_eval_{KEY}_{{}}.json",
            "second": ROOT / "artifacts" / "qwen2.5-0.5b" / "evaluations" / "direction_eval_qwen2.5-0.5b_{}.json"}
    for tag, pattern in runs.items():
        for method, short in (("last_token", "lt"), ("response_mean", "rm")):
            evaluation = json.loads(Path(str(pattern).format(method)).read_text())
            best = evaluation["query_split"]["best"]
            assert glued[f"{tag}_{short}_layer"] == str(best["layer"]) == str(evaluation["best_layer"])
            assert float(glued[f"{tag}_{short}_d"]) == pytest.approx(best["cohens_d"], abs=0.006)
            assert float(glued[f"{tag}_{short}_baseline"]) == pytest.approx(evaluation["query_split"]["majority_baseline"], abs=0.006)
    assert glued["first_n_layers"] == "30" and glued["second_n_layers"] == "24"
    assert 0 <= int(glued["n_agree"]) <= int(glued["n_statements"])
    for name in ("two_models_separation", "two_models_interventions"):
        _drawn(smoke / "artifacts" / "figures" / f"{name}.png")


QWEN_TEMPLATE = ROOT / "tests" / "data" / "qwen2.5_chat_template.jinja"


@pytest.fixture(scope="module")
def tiny_qwen_chat(tmp_path_factory) -> Path:
    """A tiny random-weight Qwen2 (the architecture of the second model) whose tokenizer carries Qwen 2.5's own
    chat template (copied from the embedded model, checked against it in test_prompts) and ChatML's tokens."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = ["<pad>", "<|im_start|>", "<|im_end|>", *"abcdefghijklmnopqrstuvwxyz", "system", "user", "assistant"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>",
                                        additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = QWEN_TEMPLATE.read_text()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                                         pad_token_id=0, eos_token_id=2))
    path = tmp_path_factory.mktemp("tiny-qwen2-chat")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_qwen2_model_runs_the_first_steps(tiny_qwen_chat, tmp_path):
    """Steps 1-3 on the second model's architecture and chat template (the real 0.5B is too slow for CI):
    prompts in Qwen's ChatML with the personas' system prompts, activations and a direction at every layer."""
    import jupytext
    import papermill as pm
    from transformers import AutoTokenizer

    from axes_lib.artifacts import Artifacts
    from axes_lib.directions import load_direction
    from axes_lib.io import read_jsonl
    from axes_lib.prompts import format_prompt

    params = {**SMOKE, "model_key": str(tiny_qwen_chat), "artifacts_dir": str(tmp_path / "artifacts")}
    for source in NOTEBOOKS[:3]:
        notebook = tmp_path / f"{source.stem}.ipynb"
        jupytext.write(jupytext.read(source), notebook)
        pm.execute_notebook(notebook, tmp_path / f"{source.stem}.out.ipynb", parameters=params, kernel_name="python3",
                            cwd=str(ROOT), progress_bar=False)
    paths = Artifacts(tmp_path / "artifacts", str(tiny_qwen_chat))
    rows = read_jsonl(paths.responses)
    assert len(rows) == 9 * SMOKE["n_queries"] and {r["persona"] for r in rows} == {p.name for p in load_personas()}
    # The prompts those answers were generated from: the tokenizer's own (Qwen's) template, as ChatML writes it.
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen_chat)
    for persona in load_personas():
        query = rows[0]["query"]
        assert format_prompt(persona.system, query, model_type=str(tiny_qwen_chat), tokenizer=tokenizer) == (
            f"<|im_start|>system\n{persona.system}<|im_end|>\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n")
    for method in ("last_token", "response_mean"):
        direction = load_direction(paths.direction(method))
        assert sorted(direction) == [0, 1, 2, 3] and all(v.shape == (32,) for v in direction.values())
