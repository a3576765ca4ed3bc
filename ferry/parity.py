"""Parity between the TF1 graph's outputs and the Keras model's: the numbers a reviewer reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ferry.files import write_atomically
from ferry.spec import Tolerance

TOP_K = 5  # top-k agreement is reported for outputs with more classes than this


class Parity:
    """Parity of one output, accumulated batch by batch (memory independent of the shard's size); passes
    when every |candidate - reference| <= atol + rtol * |reference|.

    Non-finite values (NaN, ±inf) on either side are counted (`nonfinite`) and fail the output, unless
    `tol.allow_nonfinite` and both sides hold the same non-finite value at the same place; errors are
    measured over the elements finite on both sides. `max_rel_err` is elementwise, over elements with
    |reference| > atol (below that the absolute bound decides); on elements near zero that arise by
    cancellation it reflects fp32 rounding of the original model as much as the conversion.
    `norm_rel_err` is normwise: max|candidate - reference| / max|reference|. For outputs whose last axis
    has more than one class, `argmax_agreement` (top-1) over the rows finite on both sides, and with more
    than `TOP_K` classes `top5_agreement` (the same set of top-5 classes); `rows`/`agree_*` are the counts,
    summed over shards for the whole data set.
    """

    def __init__(self, tol: Tolerance):
        self.tol = tol
        self.error: str | None = None
        self.shape: tuple[int, ...] | None = None
        self.elements = self.finite = 0
        self.ref_bad = self.cand_bad = self.mismatched = 0
        self.max_abs = self.sum_abs = self.max_rel = self.scale = 0.0
        self.close = True
        self.rows = self.agree_top1 = self.agree_top5 = 0

    def add(self, candidate: np.ndarray, reference: np.ndarray) -> Parity:
        """Take one batch of both sides' values (same shape)."""
        if self.error:
            return self
        if candidate.shape != reference.shape or (self.shape is not None and candidate.shape[1:] != self.shape):
            self.error = f"shape {list(candidate.shape)} != TF1 shape {list(reference.shape)}"
            return self
        self.shape = candidate.shape[1:]
        cand, ref = candidate.astype(np.float64), reference.astype(np.float64)
        cand_bad, ref_bad = ~np.isfinite(cand), ~np.isfinite(ref)
        agree = (np.isnan(cand) & np.isnan(ref)) | (np.isinf(ref) & (cand == ref))
        finite = ~(cand_bad | ref_bad)
        self.elements += cand.size
        self.ref_bad += int(ref_bad.sum())
        self.cand_bad += int(cand_bad.sum())
        self.mismatched += int(np.sum((cand_bad | ref_bad) & ~agree))
        diff = np.abs(cand[finite] - ref[finite])
        if diff.size:
            magnitude = np.abs(ref[finite])
            big = magnitude > self.tol.atol
            self.finite += diff.size
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.sum_abs += float(diff.sum())
            self.scale = max(self.scale, float(magnitude.max()))
            if big.any():
                self.max_rel = max(self.max_rel, float((diff[big] / magnitude[big]).max()))
            self.close &= bool(np.all(np.isclose(cand[finite], ref[finite], rtol=self.tol.rtol, atol=self.tol.atol)))
        if reference.ndim >= 2 and reference.shape[-1] > 1:
            rows = np.all(np.isfinite(ref), axis=-1) & np.all(np.isfinite(cand), axis=-1)
            c, r = cand[rows], ref[rows]
            self.rows += int(rows.sum())
            self.agree_top1 += int(np.sum(np.argmax(c, -1) == np.argmax(r, -1)))
            if reference.shape[-1] > TOP_K and c.size:
                top = [np.sort(np.argpartition(-a, TOP_K - 1, axis=-1)[..., :TOP_K], axis=-1) for a in (c, r)]
                self.agree_top5 += int(np.sum(np.all(top[0] == top[1], axis=-1)))
        return self

    @property
    def passing(self) -> bool:
        """Whether everything added so far is within tolerance (the verdict of `result`)."""
        nonfinite_ok = self.mismatched == 0 and (self.tol.allow_nonfinite or not (self.ref_bad or self.cand_bad))
        return not self.error and self.close and nonfinite_ok

    def result(self) -> dict[str, Any]:
        """The output's parity record."""
        if self.error:
            return {"passed": False, "error": self.error}
        bad = self.ref_bad or self.cand_bad
        nonfinite_ok = self.mismatched == 0 and (self.tol.allow_nonfinite or not bad)
        result: dict[str, Any] = {
            "passed": self.passing,
            "max_abs_err": self.max_abs,
            "mean_abs_err": self.sum_abs / self.finite if self.finite else 0.0,
            "max_rel_err": self.max_rel,
            "norm_rel_err": self.max_abs / self.scale if self.scale else 0.0,
            "atol": self.tol.atol,
            "rtol": self.tol.rtol,
            "elements": self.elements,
        }
        if bad:
            result["nonfinite"] = {"reference": self.ref_bad, "candidate": self.cand_bad,
                                   "mismatched": self.mismatched}
            if not nonfinite_ok:
                result["error"] = (f"non-finite values (NaN/inf): {self.ref_bad} in TF1's output, {self.cand_bad} "
                                   f"in Keras', {self.mismatched} where they differ"
                                   + ("" if self.mismatched else "; verify.tolerance.allow_nonfinite: true accepts "
                                      "them where both sides agree"))
        if self.shape and self.shape[-1] > 1:
            result["argmax_agreement"] = self.agree_top1 / self.rows if self.rows else 0.0
            result.update(rows=self.rows, agree_top1=self.agree_top1)
            if self.shape[-1] > TOP_K:
                result["top5_agreement"] = self.agree_top5 / self.rows if self.rows else 0.0
                result["agree_top5"] = self.agree_top5
        return result


def compare(candidate: np.ndarray, reference: np.ndarray, tol: Tolerance) -> dict[str, Any]:
    """Parity of one output given whole (see `Parity`)."""
    return Parity(tol).add(candidate, reference).result()


def agreement(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Top-1 (and top-5) agreement per output over the whole data set: every shard's rows counted."""
    totals: dict[str, list[int]] = {}
    for record in records:
        for name, out in record["outputs"].items():
            if "rows" in out:
                total = totals.setdefault(name, [0, 0, 0, 0])
                total[0] += out["rows"]
                total[1] += out["agree_top1"]
                if "agree_top5" in out:
                    total[2] += out["rows"]
                    total[3] += out["agree_top5"]
    return {name: {"top1": a / n if n else 0.0, **({"top5": a5 / n5} if n5 else {})}
            for name, (n, a, n5, a5) in totals.items()}


def shard_problem(record: dict[str, Any], divergence: bool = True) -> str:
    """What is wrong with a failing shard: its outputs out of tolerance and, when it was found (and
    `divergence`), the first divergent layer."""
    from ferry.divergence import describe  # ferry.divergence compares with this module's `compare`

    worst = {name: out.get("error") or f"max abs err {out['max_abs_err']:.3g} (atol {out['atol']:g}, "
             f"rtol {out['rtol']:g})" for name, out in record["outputs"].items() if not out["passed"]}
    found = record.get("first_divergence") if divergence else None
    return f"shard {record['shard']} out of tolerance: {worst}" + (f"; {describe(found)}" if found else "")


class ParityError(AssertionError):
    """A shard whose Keras outputs are out of tolerance; carries the shard's parity record (with its
    `first_divergence`, when verify looked for it)."""

    def __init__(self, record: dict[str, Any]):
        self.record = record
        super().__init__(shard_problem(record))

    def __reduce__(self):
        return (ParityError, (self.record,))


class VerificationFailed(AssertionError):
    """The verify stage's verdict: some shards out of tolerance or not run."""


def judge(records: list[dict[str, Any]], errors: list[str], report_path: Path) -> dict[str, Any]:
    """Write the parity report over all shards (with the whole data set's top-1/top-5 agreement and the
    first divergence of the first failing shard that has one); raise VerificationFailed if any shard failed,
    the first divergent layer named first."""
    from ferry.divergence import describe

    report = {"shards": records, "passed": not errors and all(r["passed"] for r in records),
              "agreement": agreement(records)}
    first = next((r["first_divergence"] for r in sorted(records, key=lambda r: r["index"])
                  if not r["passed"] and r.get("first_divergence")), None)
    if first is not None:
        report["first_divergence"] = first
    write_atomically(report_path, json.dumps(report, indent=1))
    problems = [shard_problem(r, divergence=False) for r in records if not r["passed"]] + errors
    if problems:
        raise VerificationFailed("; ".join(([describe(first)] if first else []) + problems))
    return report
