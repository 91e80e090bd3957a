"""How long each notebook of the book took in the run that rendered it, read from papermill's metadata.

`make html` runs this before rendering, so the performance appendix shows the timings of the executed
notebooks it renders: `python -m benchmarks.build_times [book_dir] [out.md] [--no-budget]`.
A notebook run with `resume=False` (`make book FORCE=1`) recomputed everything; a resumed run reused
artifacts an earlier run wrote, so only an all-cold table measures the cold build.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLD_BUDGET_MIN = 35.0  # issue 15: a cold `make book` on 2 cores


def notebook_times(book: Path) -> list[dict[str, Any]]:
    """One row per executed notebook (sorted by name): duration, start, and whether it ran cold."""
    rows = []
    for path in sorted(book.glob("[0-9][0-9]_*.ipynb")):
        notebook = json.loads(path.read_text())
        meta = notebook["metadata"].get("papermill", {})
        if meta.get("duration") is None:
            raise ValueError(f"{path} has no papermill duration: was it executed by papermill?")
        rows.append({"notebook": path.stem, "seconds": float(meta["duration"]), "start": meta.get("start_time", "")[:16],
                     "cold": meta.get("parameters", {}).get("resume") is False or not _can_resume(notebook)})
    if not rows:
        raise ValueError(f"no executed notebooks in {book}")
    return rows


def _can_resume(notebook: dict[str, Any]) -> bool:
    """Whether a notebook has a `resume` parameter (one without has nothing to reuse: every run of it is cold)."""
    cells = [c for c in notebook.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    return any(line.startswith("resume =") for c in cells for line in "".join(c["source"]).splitlines())


def markdown(rows: list[dict[str, Any]], budget: float | None = COLD_BUDGET_MIN) -> str:
    """The table, its total, and (when every step ran cold) the cold build's time against `budget` minutes
    (None: no budget, e.g. for the second model's run)."""
    total = sum(r["seconds"] for r in rows)
    all_cold = all(r["cold"] for r in rows)
    lines = ["| notebook | run | started (UTC) | minutes |", "| --- | --- | --- | ---: |"]
    lines += [f"| {r['notebook']} | {'cold (resume=False)' if r['cold'] else 'resume allowed'} | {r['start'].replace('T', ' ')} "
              f"| {r['seconds'] / 60:.1f} |" for r in rows]
    lines.append(f"| **all** | | | **{total / 60:.1f}** |")
    against = "" if budget is None else f" against a budget of {budget:.0f} min ({'met' if total / 60 <= budget else 'missed'})"
    verdict = (f"All notebooks ran cold: the cold build took {total / 60:.1f} min{against}." if all_cold else
               "Some notebooks were allowed to reuse artifacts of an earlier run, so this total need not be a cold-build time.")
    return "\n".join(lines) + "\n\n" + verdict + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    no_budget = "--no-budget" in args
    args = [a for a in args if a != "--no-budget"]
    book = Path(args[0]) if args else ROOT / "book"
    out = Path(args[1]) if len(args) > 1 else ROOT / "artifacts" / "bench" / "build_times.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(notebook_times(book), None if no_budget else COLD_BUDGET_MIN))
    print(f">> wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
