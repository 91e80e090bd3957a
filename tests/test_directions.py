"""Tests for axes_lib.directions: mean differences, unit vectors, files, checks against a model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from axes_lib import io
from axes_lib.directions import (
    compute_direction,
    load_direction,
    load_direction_with_metadata,
    random_directions,
    save_direction,
    unit,
    validate_direction,
)


def planted(n_a: int = 100, n_o: int = 150, n_layers: int = 3, d_model: int = 32, shift: float = 5.0, seed: int = 0):
    """Assistant = noise + shift*v_l, other = noise - shift*v_l, with a random unit v_l per layer."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_layers, d_model, generator=g)
    v = v / v.norm(dim=1, keepdim=True)
    a = torch.randn(n_a, n_layers, d_model, generator=g) + shift * v
    o = torch.randn(n_o, n_layers, d_model, generator=g) - shift * v
    return a, o, v


def test_matches_numpy_mean_difference() -> None:
    a, o, _ = planted()
    direction = compute_direction(a, o)
    expected = a.numpy().astype(np.float64).mean(0) - o.numpy().astype(np.float64).mean(0)
    assert sorted(direction) == list(range(a.shape[1]))
    for layer, vec in direction.items():
        assert vec.dtype == torch.float32 and vec.shape == (a.shape[2],)
        np.testing.assert_allclose(vec.numpy(), expected[layer], rtol=1e-6, atol=1e-6)


def test_recovers_planted_direction() -> None:
    a, o, v = planted()
    for layer, vec in compute_direction(a, o).items():
        assert float(torch.nn.functional.cosine_similarity(vec, v[layer], dim=0)) > 0.99


def test_layers_label_columns() -> None:
    a, o, _ = planted(n_layers=2)
    direction = compute_direction(a, o, layers=[10, 20])
    assert sorted(direction) == [10, 20]
    assert torch.equal(direction[20], compute_direction(a, o)[1])
    with pytest.raises(ValueError, match="layers has 3 entries but the activations hold 2"):
        compute_direction(a, o, layers=[1, 2, 3])
    with pytest.raises(ValueError, match="distinct"):
        compute_direction(a, o, layers=[4, 4])


@pytest.mark.parametrize(
    ("a_shape", "o_shape", "message"),
    [
        ((4, 2, 8), (4, 3, 8), r"\[n_layers, d_model\] = \[2, 8\] but other_acts has \[3, 8\]"),
        ((4, 2, 8), (4, 2, 9), "same model"),
        ((4, 8), (4, 2, 8), "3-D"),
        ((0, 2, 8), (4, 2, 8), "empty"),
    ],
)
def test_shape_errors(a_shape, o_shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        compute_direction(torch.zeros(a_shape), torch.zeros(o_shape))


def test_unit() -> None:
    a, o, _ = planted()
    direction = compute_direction(a, o)
    for layer, vec in unit(direction).items():
        assert float(vec.norm()) == pytest.approx(1.0, abs=1e-6)
        assert float(torch.dot(vec, direction[layer])) > 0
    with pytest.raises(ValueError, match="layer 3 is the zero vector"):
        unit({3: torch.zeros(4)})
    with pytest.raises(ValueError, match="one length"):
        unit({0: torch.ones(4), 1: torch.ones(5)})


def test_save_load_round_trip(tmp_path: Path) -> None:
    a, o, _ = planted()
    direction = compute_direction(a, o, layers=[3, 7, 9])
    path = save_direction(tmp_path / "d.safetensors", direction, model="tiny", method="last_token",
                          n_layers=12, n_assistant=100, n_other=150)
    loaded, meta = load_direction_with_metadata(path)
    assert list(loaded) == [3, 7, 9]
    for layer in direction:
        assert torch.equal(loaded[layer], direction[layer])
    assert meta["model"] == "tiny" and meta["method"] == "last_token"
    assert meta["n_layers"] == "12" and meta["n_assistant"] == "100" and meta["n_other"] == "150"
    assert meta["d_model"] == str(a.shape[2]) and json.loads(meta["layers"]) == [3, 7, 9]
    assert meta["code_version"] == io.code_version()
    tensors, _ = io.load_tensors(path)
    assert sorted(tensors) == ["layer.3", "layer.7", "layer.9"]
    assert [p.name for p in tmp_path.iterdir()] == ["d.safetensors"]


def test_legacy_pt(tmp_path: Path) -> None:
    direction = {0: torch.randn(8), 5: torch.randn(8)}
    torch.save(direction, tmp_path / "qwen_last_token.pt")
    loaded, meta = load_direction_with_metadata(tmp_path / "qwen_last_token.pt")
    assert meta["format"] == "legacy-pt"
    assert list(loaded) == [0, 5] and all(torch.equal(loaded[k], direction[k]) for k in direction)
    assert list(load_direction(tmp_path / "qwen_last_token.pt")) == [0, 5]


def test_legacy_pt_not_a_direction(tmp_path: Path) -> None:
    torch.save({"cohens_d": [1.0, 2.0]}, tmp_path / "eval.pt")
    with pytest.raises(ValueError, match="dict\\[int, Tensor\\]"):
        load_direction(tmp_path / "eval.pt")


class _NotAllowed:
    pass


def test_legacy_pt_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({0: _NotAllowed()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights-only"):
        load_direction(tmp_path / "evil.pt")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no direction file"):
        load_direction(tmp_path / "nope.safetensors")
    (tmp_path / "d.npy").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown direction file type '.npy'"):
        load_direction(tmp_path / "d.npy")
    io.save_tensors(tmp_path / "acts.safetensors", {"acts": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="unexpected tensor 'acts'"):
        load_direction(tmp_path / "acts.safetensors")
    with pytest.raises(ValueError, match=r"use d\.safetensors"):
        save_direction(tmp_path / "d.pt", {0: torch.ones(3)})
    with pytest.raises(ValueError, match="non-finite"):
        save_direction(tmp_path / "d.safetensors", {0: torch.tensor([1.0, float("nan")])})


def test_corrupt_or_bad_direction_file_names_the_path(tmp_path: Path) -> None:
    corrupt = tmp_path / "d.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=re.escape(str(corrupt)) + ".*not a readable safetensors file"):
        load_direction(corrupt)
    io.save_tensors(tmp_path / "nan.safetensors", {"layer.0": torch.tensor([1.0, float("nan")])})
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "nan.safetensors")) + ": direction layer 0.*non-finite"):
        load_direction(tmp_path / "nan.safetensors")
    io.save_tensors(tmp_path / "mixed.safetensors", {"layer.0": torch.ones(3), "layer.1": torch.ones(4)})
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "mixed.safetensors")) + ": .*one length"):
        load_direction(tmp_path / "mixed.safetensors")


def test_validate_direction(tiny_llama) -> None:
    model = tiny_llama[0]
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    last = n_layers - 1
    validate_direction({i: torch.randn(d) for i in range(n_layers)}, model)
    validate_direction({last: torch.randn(d)}, model.config)  # a config works too
    with pytest.raises(ValueError, match=rf"layer {n_layers} out of range: model has {n_layers} layers"):
        validate_direction({n_layers: torch.randn(d)}, model)
    with pytest.raises(ValueError, match=r"layer -1 out of range"):
        validate_direction({-1: torch.randn(d)}, model)
    with pytest.raises(ValueError, match=rf"layer {last}: vector has shape \({d - 1},\) but the model's hidden_size is {d}"):
        validate_direction({0: torch.randn(d), last: torch.randn(d - 1)}, model)
    bad = torch.randn(d)
    bad[3] = float("inf")
    bad[5] = float("nan")
    with pytest.raises(ValueError, match="layer 0: vector has 2 non-finite"):
        validate_direction({0: bad}, model)
    with pytest.raises(ValueError, match="layer 0: vector is zero"):
        validate_direction({0: torch.zeros(d)}, model)
    with pytest.raises(ValueError, match="non-empty"):
        validate_direction({}, model)


def _axis(d_model: int = 256, layers=(2, 5, 9), seed: int = 3) -> dict[int, torch.Tensor]:
    """A direction with a different norm at every layer (norms 1.5, 6 and 40 apart)."""
    g = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(d_model, generator=g) * s for layer, s in zip(layers, (0.1, 0.4, 2.5))}


@pytest.mark.parametrize("orthogonal", [True, False])
def test_random_directions_match_each_layers_norm(orthogonal):
    axis = _axis()
    draws = random_directions(axis, 5, seed=0, orthogonal=orthogonal)
    assert len(draws) == 5
    for d in draws:
        assert sorted(d) == sorted(axis)
        for layer, v in d.items():
            assert v.dtype == torch.float32 and v.shape == axis[layer].shape
            assert float(v.norm()) == pytest.approx(float(axis[layer].norm()), rel=1e-6)


def test_random_directions_orthogonal_to_the_axis_only_when_asked():
    axis = _axis()
    cos = lambda a, b: float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))  # noqa: E731
    ortho = random_directions(axis, 20, seed=1)
    assert max(abs(cos(d[i], axis[i])) for d in ortho for i in axis) < 1e-6
    free = random_directions(axis, 200, seed=1, orthogonal=False)
    c = np.array([cos(d[i], axis[i]) for d in free for i in axis])
    # Isotropic Gaussian draws: cos^2 with any fixed vector averages 1/d_model (here 1/256).
    assert np.abs(c).max() > 1e-3 and np.mean(c ** 2) == pytest.approx(1 / 256, rel=0.25)


def test_random_directions_reproducible_by_seed_and_independent():
    axis = _axis()
    a, b = random_directions(axis, 4, seed=7), random_directions(axis, 4, seed=7)
    assert all(torch.equal(x[i], y[i]) for x, y in zip(a, b) for i in axis)
    other = random_directions(axis, 4, seed=8)
    assert not any(torch.equal(x[i], y[i]) for x, y in zip(a, other) for i in axis)
    # Draws and layers are independent: every pair of unit vectors is near-orthogonal in 256 dimensions
    # (|cos| of two independent isotropic vectors has SD 1/16; 0.35 is over five SDs).
    units = [v.double() / v.double().norm() for d in a for v in d.values()]
    gram = torch.stack(units) @ torch.stack(units).T
    off = gram[~torch.eye(len(units), dtype=torch.bool)]
    assert off.abs().max() < 0.35
    # More draws keep the first ones (a larger control set extends a smaller one; its sweep rows are reused).
    assert all(torch.equal(x[i], y[i]) for x, y in zip(random_directions(axis, 2, seed=7), a) for i in axis)


@pytest.mark.parametrize("bad", [dict(n=0), dict(n=2.5), dict(n=True), dict(seed="x"), dict(seed=1.0)])
def test_random_directions_reject_bad_arguments(bad):
    with pytest.raises(ValueError):
        random_directions(_axis(), **{"n": 2, "seed": 0, **bad})
