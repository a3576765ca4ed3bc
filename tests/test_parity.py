"""Parity metrics: the allclose-style verdict, error magnitudes and argmax agreement."""

from __future__ import annotations

import numpy as np
import pytest

from ferry.parity import compare
from ferry.spec import Tolerance

pytestmark = pytest.mark.unit

TOL = Tolerance(atol=1e-5, rtol=1e-5)


def test_metrics_on_a_known_difference():
    ref = np.array([[0.1, 0.9], [0.6, 0.4]], np.float32)
    cand = ref + np.array([[0, 2e-6], [-4e-6, 0]], np.float32)
    out = compare(cand, ref, TOL)
    assert out["passed"] is True
    assert out["max_abs_err"] == pytest.approx(4e-6, rel=1e-2)
    assert out["mean_abs_err"] == pytest.approx(1.5e-6, rel=1e-2)
    assert out["max_rel_err"] == pytest.approx(4e-6 / 0.6, rel=1e-2)
    assert out["norm_rel_err"] == pytest.approx(4e-6 / 0.9, rel=1e-2)
    assert out["argmax_agreement"] == 1.0


def test_out_of_tolerance_and_argmax_flip():
    ref = np.array([[0.51, 0.49], [0.2, 0.8]], np.float32)
    cand = np.array([[0.49, 0.51], [0.2, 0.8]], np.float32)
    out = compare(cand, ref, TOL)
    assert out["passed"] is False and out["argmax_agreement"] == 0.5
    assert out["max_abs_err"] == pytest.approx(0.02, rel=1e-4)


def test_relative_error_ignores_elements_below_atol_and_nan_mismatch_fails():
    ref = np.array([0.0, 1.0], np.float32)
    cand = np.array([1e-6, 1.0], np.float32)
    out = compare(cand, ref, TOL)
    assert out["passed"] and out["max_rel_err"] == 0.0 and "argmax_agreement" not in out
    out = compare(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), TOL)
    assert out["passed"] is False and out["nonfinite"] == {"reference": 0, "candidate": 1, "mismatched": 1}


def test_nonfinite_values_fail_unless_allowed_and_agreeing():
    """NaN inputs once gave "max abs err 0" and passed: NaN/inf are counted and fail the output."""
    ref = np.array([[np.nan, 1.0], [np.inf, 2.0]], np.float32)
    out = compare(ref.copy(), ref, TOL)
    assert out["passed"] is False
    assert out["nonfinite"] == {"reference": 2, "candidate": 2, "mismatched": 0}
    assert "2 in TF1's output, 2 in Keras', 0 where they differ" in out["error"]
    assert "allow_nonfinite: true accepts them" in out["error"]
    allowed = Tolerance(atol=1e-5, rtol=1e-5, allow_nonfinite=True)
    assert compare(ref.copy(), ref, allowed)["passed"] is True
    flipped = ref.copy()
    flipped[1, 0] = -np.inf  # -inf where TF1 has +inf: a real difference, allowed or not
    out = compare(flipped, ref, allowed)
    assert out["passed"] is False and out["nonfinite"]["mismatched"] == 1
    assert out["max_abs_err"] == 0.0  # the finite part agrees; the verdict comes from the non-finite one


def test_shape_mismatch_fails_with_both_shapes():
    out = compare(np.zeros((2, 3)), np.zeros((2, 4)), TOL)
    assert out == {"passed": False, "error": "shape [2, 3] != TF1 shape [2, 4]"}
