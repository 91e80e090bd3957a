"""Tests for axes_lib.io: atomic writes, JSON/JSONL records, safetensors tensors, manifests."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from axes_lib import io


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    io.atomic_write_text(target, "first")
    io.atomic_write_text(target, "second")
    io.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert target.read_text() == "second"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.json"
    io.write_json(target, {"v": 1})

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        io.write_json(target, {"v": 2})
    monkeypatch.undo()
    assert io.read_json(target) == {"v": 1}
    assert _leftovers(tmp_path) == []


def test_atomic_write_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = io.atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_json_round_trip_with_numpy_and_torch(tmp_path: Path) -> None:
    obj = {"b": 1, "a": [1.5, "x"], "np": np.arange(3), "scalar": np.float32(2.5), "t": torch.tensor([1.0, 2.0])}
    io.write_json(tmp_path / "o.json", obj)
    text = (tmp_path / "o.json").read_text()
    assert text.index('"b"') < text.index('"a"')  # keys keep their order
    assert "\n  " in text  # indented
    assert io.read_json(tmp_path / "o.json") == {"b": 1, "a": [1.5, "x"], "np": [0, 1, 2], "scalar": 2.5, "t": [1.0, 2.0]}


def test_write_json_rejects_unknown_objects(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serialisable"):
        io.write_json(tmp_path / "o.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_jsonl_append_and_read(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    assert io.append_jsonl(path, [{"i": 0}, {"i": 1}]) == 2
    io.append_jsonl(path, {"i": 2, "text": "café"})
    assert io.read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2, "text": "café"}]


def test_read_jsonl_drops_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    io.append_jsonl(path, [{"i": 0}, {"i": 1}])
    with open(path, "a") as fh:
        fh.write('{"i": 2, "te')  # an interrupted append
    with pytest.warns(UserWarning, match="truncated last line"):
        assert io.read_jsonl(path) == [{"i": 0}, {"i": 1}]
    # A resumed run appends after repairing the tail: the partial record is dropped, the new one is whole.
    with pytest.warns(UserWarning, match="truncated last line"):
        io.append_jsonl(path, {"i": 2})
    assert io.read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_append_jsonl_terminates_a_complete_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"i": 0}')  # valid, but no trailing newline
    io.append_jsonl(path, {"i": 1})
    assert io.read_jsonl(path) == [{"i": 0}, {"i": 1}]


def test_read_jsonl_rejects_corrupt_middle_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"i": 0}\n{"i": \n{"i": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        io.read_jsonl(path)


def test_tensors_round_trip_with_shared_storage(tmp_path: Path) -> None:
    base = torch.randn(3, 4)
    tensors = {"row0": base[0], "row1": base[1], "ints": torch.arange(5)}
    io.save_tensors(tmp_path / "t.safetensors", tensors, {"model": "tiny"})
    loaded, meta = io.load_tensors(tmp_path / "t.safetensors")
    assert meta == {"model": "tiny"}
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
    assert _leftovers(tmp_path) == []


def test_save_tensors_rejects_non_string_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'n' has a int value"):
        io.save_tensors(tmp_path / "t.safetensors", {"x": torch.zeros(2)}, {"n": 3})  # type: ignore[dict-item]


def test_load_tensors_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no tensor file"):
        io.load_tensors(tmp_path / "missing.safetensors")


def test_code_version_names_git_and_sources() -> None:
    version = io.code_version()
    assert re.search(r"src:[0-9a-f]{12}$", version)
    assert version == io.code_version()  # stable between calls


def test_write_manifest(tmp_path: Path) -> None:
    io.write_manifest(tmp_path / "m.json", {"model": "smollm2", "n": 3}, 1.23456, outputs=["a.safetensors"])
    manifest = io.read_json(tmp_path / "m.json")
    assert manifest["params"] == {"model": "smollm2", "n": 3}
    assert manifest["seconds"] == pytest.approx(1.235)
    assert manifest["code_version"] == io.code_version()
    assert manifest["outputs"] == ["a.safetensors"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", manifest["created"])
    with pytest.raises(ValueError, match="clash"):
        io.write_manifest(tmp_path / "m2.json", {}, 0.0, created="yesterday")
    json.loads((tmp_path / "m.json").read_text())


# -- issue 18: a crash inside a multi-byte character, corrupt files, malformed manifests -----------------

RECORDS = [{"i": 0, "text": "café"}, {"i": 1, "text": "naïve — ünïcödé ✓"}, {"i": 2, "text": "日本語"}]


def _lines(records: list[dict]) -> list[bytes]:
    return [(json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records]


@pytest.mark.parametrize("cut", range(1, sum(len(line) for line in _lines(RECORDS))))
def test_any_cut_loses_at_most_the_last_record_and_append_repairs_it(tmp_path: Path, cut: int) -> None:
    """Every byte offset a crash could leave (inside "é" too): the whole records before it survive, resume works."""
    data = b"".join(_lines(RECORDS))
    path = tmp_path / "r.jsonl"
    path.write_bytes(data[:cut])
    # Independent expectation: the records whose JSON text (newline excluded) lies wholly before the cut.
    ends = np.cumsum([len(line) for line in _lines(RECORDS)]) - 1
    whole = [r for r, end in zip(RECORDS, ends, strict=True) if end <= cut]
    partial = cut not in set(ends) | set(ends + 1)  # the file ends inside a record
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert io.read_jsonl(path) == whole
        io.append_jsonl(path, {"i": "new"})
    assert len([w for w in caught if "truncated last line" in str(w.message)]) == (2 if partial else 0)
    assert io.read_jsonl(path) == [*whole, {"i": "new"}]
    assert path.read_bytes().endswith(b'{"i": "new"}\n')


def test_read_jsonl_cut_inside_a_multibyte_character(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    io.append_jsonl(path, [{"i": 0}])
    with open(path, "ab") as fh:
        fh.write('{"i": 1, "text": "caf'.encode() + "é".encode()[:1])  # the crash split "é"
    with pytest.warns(UserWarning, match=r"r\.jsonl: dropping a truncated last line"):
        assert io.read_jsonl(path) == [{"i": 0}]


def test_read_jsonl_undecodable_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"i": 0}\n{"t": "\xc3"}\n{"i": 2}\n')
    with pytest.raises(ValueError, match=r"r\.jsonl: line 2 is not UTF-8"):
        io.read_jsonl(path)


def test_load_tensors_corrupt_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "acts.safetensors"
    path.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a readable safetensors file"):
        io.load_tensors(path)
    io.save_tensors(path, {"x": torch.arange(100.0)})
    path.write_bytes(path.read_bytes()[:-40])  # truncated: the header promises more bytes than are left
    with pytest.raises(ValueError, match=re.escape(str(path))):
        io.load_tensors(path)


def test_read_json_truncated_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"params": {"n": ')
    with pytest.raises(ValueError, match=r"m\.json: not valid JSON .*line 1"):
        io.read_json(path)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("[1, 2]", "a JSON list"),
        ('"params"', "a JSON str"),
        ('{"seconds": 1}', r"an object without a \"params\" object \(keys \['seconds'\]\)"),
        ('{"params": [1]}', "an object without"),
        ('{"params": {"n": ', "not valid JSON"),
    ],
)
def test_claim_artifacts_malformed_manifest(tmp_path: Path, text: str, found: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"manifest\.json: .*" + found) as info:
        io.claim_artifacts(path, {"n": 1})
    assert 'a JSON object with a "params" object' in str(info.value)
    assert io.claim_artifacts(path, {"n": 1}, overwrite=True) is False  # overwrite starts afresh


def test_claim_artifacts_same_and_other_params(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    assert io.claim_artifacts(path, {"n": 1}) is False  # nothing there yet
    io.write_manifest(path, {"n": 1, "x": np.float32(0.5)}, 0.0)
    assert io.claim_artifacts(path, {"n": 1, "x": np.float32(0.5)}) is True
    with pytest.raises(ValueError, match=r"other parameters \(differ: \['n'\]\)"):
        io.claim_artifacts(path, {"n": 2, "x": 0.5})
    assert io.claim_artifacts(path, {"n": 2, "x": 0.5}, overwrite=True) is False


def test_code_fingerprint_follows_imports_only(tmp_path, monkeypatch):
    """A module's fingerprint changes with its own source and any axes_lib module it imports (at any depth),
    not with a module it does not import; a subpackage counts whole; package data counts when a module of
    the closure names its file."""
    import axes_lib.resume as resume

    pkg = tmp_path / "axes_lib"
    (pkg / "judge").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "__init__.py").write_text("def __getattr__(name):\n    from axes_lib import c\n")
    (pkg / "a.py").write_text("from axes_lib.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from axes_lib.judge import Score\n")
    (pkg / "c.py").write_text("x = 1\n")
    (pkg / "judge" / "rubric.py").write_text("NAME = 'rubrics.json'\n")
    (pkg / "judge" / "__init__.py").write_text("")
    (pkg / "judge" / "base.py").write_text("Score = 1\n")
    monkeypatch.setattr(resume, "_PACKAGE", pkg)
    closure = [p.relative_to(pkg).as_posix() for p in resume.module_closure(["axes_lib.a"])]
    assert closure == ["__init__.py", "a.py", "b.py", "judge/__init__.py", "judge/base.py", "judge/rubric.py"]
    before = resume.code_fingerprint(["axes_lib.a"])
    (pkg / "c.py").write_text("x = 2\n")  # not imported by a (the package's lazy import is not followed)
    assert resume.code_fingerprint(["axes_lib.a"]) == before
    (pkg / "judge" / "base.py").write_text("Score = 2\n")  # imported two steps away
    assert resume.code_fingerprint(["axes_lib.a"]) != before
    before = resume.code_fingerprint(["axes_lib.a"])
    (pkg / "data" / "personas.json").write_text("{}")  # data no module of the closure names
    assert resume.code_fingerprint(["axes_lib.a"]) == before
    (pkg / "data" / "rubrics.json").write_text("{}")  # data judge/rubric.py names
    assert resume.code_fingerprint(["axes_lib.a"]) != before
