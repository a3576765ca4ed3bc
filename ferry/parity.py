"""Parity between the TF1 graph's outputs and the Keras model's: the numbers a reviewer reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ferry.paths import write_atomically
from ferry.spec import Tolerance


def compare(candidate: np.ndarray, reference: np.ndarray, tol: Tolerance) -> dict[str, Any]:
    """Compare one output; passes when every |candidate - reference| <= atol + rtol * |reference|.

    `max_rel_err` is elementwise, over elements with |reference| > atol (below that the absolute
    bound decides); on elements near zero that arise by cancellation it reflects fp32 rounding of
    the original model as much as the conversion. `norm_rel_err` is normwise:
    max|candidate - reference| / max|reference|. `argmax_agreement` is reported for outputs whose
    last axis has more than one class.
    """
    if candidate.shape != reference.shape:
        return {"passed": False, "error": f"shape {list(candidate.shape)} != TF1 shape {list(reference.shape)}"}
    cand = candidate.astype(np.float64)
    ref = reference.astype(np.float64)
    nan_mismatch = int(np.sum(np.isnan(cand) != np.isnan(ref)))
    diff = np.abs(np.nan_to_num(cand - ref, nan=0.0))
    big = np.abs(ref) > tol.atol
    result: dict[str, Any] = {
        "passed": bool(nan_mismatch == 0 and np.all(np.isclose(cand, ref, rtol=tol.rtol, atol=tol.atol,
                                                                equal_nan=True))),
        "max_abs_err": float(diff.max()) if diff.size else 0.0,
        "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
        "max_rel_err": float((diff[big] / np.abs(ref[big])).max()) if big.any() else 0.0,
        "norm_rel_err": float(diff.max() / scale) if (scale := float(np.nanmax(np.abs(ref), initial=0))) else 0.0,
        "atol": tol.atol,
        "rtol": tol.rtol,
        "elements": int(diff.size),
    }
    if nan_mismatch:
        result["nan_mismatch"] = nan_mismatch
    if reference.ndim >= 2 and reference.shape[-1] > 1:
        result["argmax_agreement"] = float(np.mean(np.argmax(cand, -1) == np.argmax(ref, -1)))
    return result


class ParityError(AssertionError):
    """A shard whose Keras outputs are out of tolerance; carries the shard's parity record."""

    def __init__(self, record: dict[str, Any]):
        self.record = record
        worst = {name: out.get("error") or f"max abs err {out['max_abs_err']:.3g} (atol {out['atol']:g}, "
                 f"rtol {out['rtol']:g})" for name, out in record["outputs"].items() if not out["passed"]}
        super().__init__(f"shard {record['shard']} out of tolerance: {worst}")

    def __reduce__(self):
        return (ParityError, (self.record,))


class VerificationFailed(AssertionError):
    """The verify stage's verdict: some shards out of tolerance or not run."""


def judge(records: list[dict[str, Any]], errors: list[str], report_path: Path) -> dict[str, Any]:
    """Write the parity report over all shards; raise VerificationFailed if any shard failed."""
    report = {"shards": records, "passed": not errors and all(r["passed"] for r in records)}
    write_atomically(report_path, json.dumps(report, indent=1))
    problems = [str(ParityError(r)) for r in records if not r["passed"]] + errors
    if problems:
        raise VerificationFailed("; ".join(problems))
    return report
