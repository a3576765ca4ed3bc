"""Parity between the TF1 graph's outputs and the Keras model's: the numbers a reviewer reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ferry.files import write_atomically
from ferry.spec import Tolerance


def compare(candidate: np.ndarray, reference: np.ndarray, tol: Tolerance) -> dict[str, Any]:
    """Compare one output; passes when every |candidate - reference| <= atol + rtol * |reference|.

    Non-finite values (NaN, ±inf) on either side are counted (`nonfinite`) and fail the output, unless
    `tol.allow_nonfinite` and both sides hold the same non-finite value at the same place; errors are
    measured over the elements finite on both sides. `max_rel_err` is elementwise, over elements with
    |reference| > atol (below that the absolute bound decides); on elements near zero that arise by
    cancellation it reflects fp32 rounding of the original model as much as the conversion.
    `norm_rel_err` is normwise: max|candidate - reference| / max|reference|. `argmax_agreement` is
    reported for outputs whose last axis has more than one class.
    """
    if candidate.shape != reference.shape:
        return {"passed": False, "error": f"shape {list(candidate.shape)} != TF1 shape {list(reference.shape)}"}
    cand = candidate.astype(np.float64)
    ref = reference.astype(np.float64)
    cand_bad, ref_bad = ~np.isfinite(cand), ~np.isfinite(ref)
    agree = (np.isnan(cand) & np.isnan(ref)) | (np.isinf(ref) & (cand == ref))
    finite = ~(cand_bad | ref_bad)
    mismatched = int(np.sum((cand_bad | ref_bad) & ~agree))
    diff = np.abs(cand[finite] - ref[finite])
    big = np.abs(ref[finite]) > tol.atol
    close = bool(np.all(np.isclose(cand[finite], ref[finite], rtol=tol.rtol, atol=tol.atol)))
    nonfinite_ok = mismatched == 0 and (tol.allow_nonfinite or not (cand_bad.any() or ref_bad.any()))
    scale = float(np.max(np.abs(ref[finite]), initial=0))
    result: dict[str, Any] = {
        "passed": close and nonfinite_ok,
        "max_abs_err": float(diff.max()) if diff.size else 0.0,
        "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
        "max_rel_err": float((diff[big] / np.abs(ref[finite][big])).max()) if big.any() else 0.0,
        "norm_rel_err": float(diff.max() / scale) if scale and diff.size else 0.0,
        "atol": tol.atol,
        "rtol": tol.rtol,
        "elements": int(cand.size),
    }
    if cand_bad.any() or ref_bad.any():
        result["nonfinite"] = {"reference": int(ref_bad.sum()), "candidate": int(cand_bad.sum()),
                               "mismatched": mismatched}
        if not nonfinite_ok:
            result["error"] = (f"non-finite values (NaN/inf): {int(ref_bad.sum())} in TF1's output, "
                               f"{int(cand_bad.sum())} in Keras', {mismatched} where they differ"
                               + ("" if mismatched else "; verify.tolerance.allow_nonfinite: true accepts them "
                                  "where both sides agree"))
    if reference.ndim >= 2 and reference.shape[-1] > 1:
        rows = np.all(np.isfinite(ref), axis=-1) & np.all(np.isfinite(cand), axis=-1)
        result["argmax_agreement"] = float(np.mean(np.argmax(cand[rows], -1) == np.argmax(ref[rows], -1))) \
            if rows.any() else 0.0
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
