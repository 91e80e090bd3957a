"""Execute the book's notebooks in order, each only when something that produced its committed output changed.

`make notebooks` (and so `make book`) runs this. An executed notebook, `book/NN_name.ipynb`, is committed
with a record of what produced it in its metadata (`axes_build`): a key over

- the notebook's source (`notebooks/NN_name.py`) and the parameters file's content,
- the pinned requirements (`requirements.txt`),
- the sources of every axes_lib module the notebook imports, at any depth, and the package data
  (`axes_lib.resume.code_fingerprint`), and
- the content of every artifact the step could read: each file under `artifacts/` except what this step and
  later steps write (their records list it), the benchmarks' outputs and the activation cache (which is not
  committed; its file carries its own key, see `activations.contrastive_activations`).

A notebook is executed again when its key differs from the record's (the runner says which parts changed),
when a file it wrote is missing, or with `--force` (FORCE=1, which also passes `resume=False`); otherwise the
committed notebook is rendered as it is. An executed step's outputs are then new inputs of the steps after
it, so a change reruns exactly the steps it can reach.

Several runs share `artifacts/`: the default model's into `book/`, a second model's (its own parameters file
and `artifacts_dir`) into `book/<model_key>/` with `--book`. What another run wrote (the outputs its records
list) is not an input of this run, so rerunning one model never invalidates the other; only a notebook with an
`other_artifacts_dir` parameter (the comparison of models) reads every run's outputs.

    python scripts/run_notebooks.py [--params params/default.yaml] [--book book] [--force] [--only NN ...] [--dry-run]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCES, BOOK, ARTIFACTS = ROOT / "notebooks", ROOT / "book", ROOT / "artifacts"
#: Files under artifacts/ that are neither inputs nor recorded outputs: the benchmarks' results (no notebook
#: reads them; `make html` rewrites build_times.md after the notebooks ran) and the activation cache.
NOT_TRACKED = frozenset({"bench", "activations"})
RECORD = "axes_build"
#: The parameter that marks a notebook reading other runs' outputs (step 12, the comparison of models).
READS_OTHER_RUNS = "other_artifacts_dir"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tracked_files() -> dict[str, Path]:
    """Every file under artifacts/ that can be an input or an output, by its path relative to the repository."""
    return {p.relative_to(ROOT).as_posix(): p for p in sorted(ARTIFACTS.rglob("*"))
            if p.is_file() and not NOT_TRACKED & set(p.relative_to(ARTIFACTS).parts[:-1])}


def other_runs_outputs(book: Path) -> set[str]:
    """The files the other runs' records say they wrote: executed notebooks in `BOOK` and its subfolders, except
    those of this run's `book` folder."""
    found = [*BOOK.glob("[0-9][0-9]_*.ipynb"), *BOOK.glob("*/[0-9][0-9]_*.ipynb")]
    return {name for path in found if path.parent != book for name in (read_record(path) or {}).get("outputs", {})}


def reads_other_runs(source: str, filename: str = "<notebook>") -> bool:
    """Whether a notebook's source assigns `READS_OTHER_RUNS` at top level (its parameters cell)."""
    return any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == READS_OTHER_RUNS for t in node.targets)
               for node in ast.parse(source, filename=filename).body)


def library_modules(source: str, filename: str = "<notebook>") -> list[str]:
    """The axes_lib modules (and names) a notebook's jupytext source imports."""
    from axes_lib.resume import imported_names

    return imported_names(source, filename)


def read_record(executed: Path) -> dict[str, Any] | None:
    if not executed.is_file():
        return None
    try:
        return json.loads(executed.read_text())["metadata"].get(RECORD)
    except (ValueError, KeyError):
        return None


def key_parts(source: Path, params: Path | None, not_inputs: set[str],
              files: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """What the step's result depends on, part by part (`key` hashes it); `files`: a `snapshot()`, less
    `not_inputs` (what this and later steps, or other runs, write)."""
    from axes_lib.resume import code_fingerprint

    text = source.read_text()
    return {
        "source": hashlib.sha256(text.encode()).hexdigest(),
        "params": sha256(params) if params else None,
        "requirements": sha256(ROOT / "requirements.txt"),
        "code": code_fingerprint(library_modules(text, str(source))),
        "inputs": {name: digest for name, (_, digest) in files.items() if name not in not_inputs},
    }


def key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _as_of(record: dict[str, Any], not_inputs: set[str]) -> dict[str, Any]:
    """A record's key parts, its inputs without the files now known to be written by this or a later step, or
    by another run (a step that ran for the first time after this one recorded them as inputs then)."""
    parts = {part: record.get(part) for part in ("source", "params", "requirements", "code")}
    return {**parts, "inputs": {k: v for k, v in record["inputs"].items() if k not in not_inputs}}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records' key parts, in words (for the log)."""
    out = [part for part in ("source", "params", "requirements", "code") if old.get(part) != new[part]]
    before, after = old.get("inputs", {}), new["inputs"]
    out += [f"{name} ({'new' if name not in before else 'gone' if name not in after else 'changed'})"
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]
    return out


def snapshot() -> dict[str, tuple[int, str]]:
    return {name: (path.stat().st_mtime_ns, sha256(path)) for name, path in tracked_files().items()}


def execute(source: Path, executed: Path, params: Path | None, force: bool) -> None:
    """jupytext source -> notebooks/NN.ipynb, papermill -> book/NN.ipynb (through a temporary file)."""
    bin_dir = Path(sys.executable).parent
    notebook = source.with_suffix(".ipynb")
    subprocess.run([bin_dir / "jupytext", "--to", "ipynb", "--set-kernel", "python3", "--output", notebook, source],
                   check=True)
    tmp = executed.with_name(f".{executed.stem}.tmp.ipynb")
    command = [bin_dir / "papermill", "-k", "python3", *(["-f", params] if params else []),
               *(["-p", "resume", "False"] if force else []), notebook, tmp]
    subprocess.run(command, check=True, cwd=ROOT)
    tmp.replace(executed)


def _relative(path: Path | None) -> str | None:
    """A path as the record keeps it: relative to the repository when inside it (records travel in git)."""
    if path is None:
        return None
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def write_record(executed: Path, record: dict[str, Any]) -> None:
    notebook = json.loads(executed.read_text())
    notebook["metadata"][RECORD] = record
    executed.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def run(params: Path | None, force: bool = False, only: list[str] | None = None, dry_run: bool = False,
        book: Path | None = None) -> list[str]:
    """Execute the stale steps in order, into `book` (default `BOOK`); returns the names of those executed
    (or, dry run, to execute)."""
    book = BOOK if book is None else book
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if only:
        unknown = [n for n in only if not any(s.stem.startswith(n) for s in sources)]
        if unknown:
            raise SystemExit(f"--only {unknown}: no notebook starts so; have {[s.stem for s in sources]}")
    book.mkdir(parents=True, exist_ok=True)
    records = {s.stem: read_record(book / f"{s.stem}.ipynb") for s in sources}
    others = other_runs_outputs(book)
    executed_now: list[str] = []
    for i, source in enumerate(sources):
        if only and not any(source.stem.startswith(n) for n in only):
            print(f">> {source.stem}: left as it is (--only)", flush=True)
            continue
        executed = book / f"{source.stem}.ipynb"
        later = {name for s in sources[i:] for name in (records[s.stem] or {}).get("outputs", {})}
        before = snapshot()
        not_inputs = later if reads_other_runs(source.read_text(), str(source)) else later | others
        parts = key_parts(source, params, not_inputs, before)
        record = records[source.stem]
        missing = [name for name in (record or {}).get("outputs", {}) if not (ROOT / name).is_file()]
        if force:
            why = ["FORCE"]
        elif record is None or "inputs" not in record:
            why = ["no record of an earlier run"]
        elif key(recorded := _as_of(record, not_inputs)) != key(parts):
            why = changes(recorded, parts)
        else:
            why = [f"{name} missing" for name in missing]
        if not why:
            print(f">> {source.stem}: up to date (key {key(parts)})", flush=True)
            continue
        print(f">> {source.stem}: executing: {'; '.join(why[:8])}{' ...' if len(why) > 8 else ''}", flush=True)
        executed_now.append(source.stem)
        if dry_run:
            continue
        start = time.time()
        execute(source, executed, params, force)
        after = snapshot()
        outputs = {name for name, (mtime, digest) in after.items() if before.get(name, (None, None))[0] != mtime}
        outputs |= {name for name in (record or {}).get("outputs", {}) if name in after}  # written then, kept now
        records[source.stem] = {**parts, "key": key(parts), "params_file": _relative(params),
                                "resume": not force, "executed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                                "outputs": {name: after[name][1] for name in sorted(outputs)}}
        write_record(executed, records[source.stem])
    return executed_now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=None, help="parameters file handed to every notebook")
    parser.add_argument("--book", type=Path, default=None, help="folder of this run's executed notebooks (default book/)")
    parser.add_argument("--force", action="store_true", help="execute every notebook, with resume=False")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to consider (the rest are left as they are)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be executed, execute nothing")
    args = parser.parse_args(argv)
    if args.params is not None and not args.params.is_file():
        parser.error(f"--params {args.params} not found")
    os.chdir(ROOT)
    run(args.params.resolve() if args.params else None, args.force, args.only, args.dry_run,
        args.book.resolve() if args.book else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
