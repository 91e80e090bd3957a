"""Capping bands by depth: disjoint, of equal width, each inside its depth range, for any number of layers;
bands a user gives are checked the same way before any model work."""

from __future__ import annotations

import pytest

from axes_lib.calibration import DEPTHS, check_bands, depth_bands, shared_layers


@pytest.mark.parametrize("n_layers", [12, 16, 24, 28, 30, 32, 36, 40, 48, 64, 80])
def test_depth_bands_are_disjoint_equal_and_at_their_depth(n_layers):
    bands = depth_bands(n_layers)
    assert list(bands) == list(DEPTHS)
    widths = {len(b) for b in bands.values()}
    assert len(widths) == 1
    layers = [i for b in bands.values() for i in b]
    assert len(layers) == len(set(layers)) and all(0 <= i < n_layers for i in layers)
    for name, band in bands.items():
        lo, hi = DEPTHS[name]
        assert band == list(range(band[0], band[-1] + 1))  # contiguous
        centre = (band[0] + band[-1]) / 2 / n_layers
        assert abs(centre - (lo + hi) / 2) <= 1 / n_layers  # centred in its range, up to one layer of rounding
        assert lo - 1 / n_layers <= band[0] / n_layers and band[-1] / n_layers <= hi + 1 / n_layers


def test_smollm2_bands():
    """30 layers: 15 % of them, rounded half up, is 5 layers a band."""
    assert depth_bands(30) == {"early": [6, 7, 8, 9, 10], "middle": [14, 15, 16, 17, 18], "late": [22, 23, 24, 25, 26]}


def test_bands_that_overlap_or_do_not_fit_are_rejected():
    with pytest.raises(ValueError, match="disjoint: 'late' and 'best' share layers \\[22, 23\\]"):
        check_bands({"best": [21, 22, 23], "late": [22, 23, 24]}, 30)
    with pytest.raises(ValueError, match="not in a model of 30 layers"):
        check_bands({"late": [28, 29, 30]}, 30)
    with pytest.raises(ValueError, match="empty"):
        check_bands({"late": []}, 30)
    with pytest.raises(ValueError, match="disjoint"):
        depth_bands(3)  # too few layers for three bands
    assert shared_layers([21, 22, 23], depth_bands(30)) == {"late": [22, 23]}
    assert shared_layers([0, 1], depth_bands(30)) == {}
