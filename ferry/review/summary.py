"""The catalogue run's summary: one row per model, as a table for people and for MLflow."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ferry.stages import WorkDir


def summary_row(model: str, status: str, failed_stage: str | None, durations: dict[str, float],
                work: WorkDir | None, export: str | None, error: object = None, cached: str = "") -> dict[str, Any]:
    """One model's row, reading coverage and worst error from the files its stages wrote in this run
    (`durations` names the stages attempted); `cached`: the stages taken from the cache (`all`)."""
    coverage = worst = worst_rel = top1 = top5 = None
    by_output: dict[str, float] = {}
    if work and "restore" in durations and work.mapping.exists():
        coverage = json.loads(work.mapping.read_text())["coverage"]["model_weights"]
    if work and "verify" in durations and work.parity.exists():
        rel: list[float] = []
        report = json.loads(work.parity.read_text())
        agreement = report.get("agreement", {}).values()  # classifiers' outputs, over the whole data set
        top1 = min((a["top1"] for a in agreement), default=None)
        top5 = min((a["top5"] for a in agreement if "top5" in a), default=None)
        for shard in report["shards"]:
            for name, o in shard["outputs"].items():
                if "max_abs_err" in o:
                    by_output[name] = max(by_output.get(name, 0.0), o["max_abs_err"])
                    rel.append(o["norm_rel_err"])
        worst = max(by_output.values(), default=None)
        worst_rel = max(rel, default=None)
    return {"model": model, "status": status, "failed_stage": failed_stage or "", "coverage": coverage,
            "worst_abs_err": worst, "worst_rel_err": worst_rel, "top1": top1, "top5": top5,
            "seconds": round(sum(durations.values()), 2),
            "cached": cached, "export": export or "",
            "worst_abs_err_by_output": " ".join(f"{k}={v:.3g}" for k, v in by_output.items()),
            "stage_seconds": " ".join(f"{k}={v:.2f}" for k, v in durations.items()),
            "error": "" if error is None else str(error)[:300]}


def format_summary(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of the rows (errors on their own indented lines)."""
    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if value is None or value == "":
            return "-"
        if key in ("coverage", "top1", "top5"):
            return f"{value:.0%}" if value in (0, 1) else f"{value:.2%}"
        if key in ("worst_abs_err", "worst_rel_err"):
            return f"{value:.2e}"
        return str(value)

    keys = ["model", "status", "failed_stage", "coverage", "worst_abs_err", "worst_rel_err", "top1", "top5", "seconds",
            "cached"]
    return text_table(rows, keys, cell, lambda row: row.get("error") or "")


def text_table(rows: list[dict[str, Any]], keys: list[str], cell: Callable[[dict[str, Any], str], str],
               note: Callable[[dict[str, Any]], str]) -> str:
    """Rows as a fixed-width text table (columns `keys`, each row's `note` on an indented line of its own)."""
    widths = {k: max(len(k), *(len(cell(r, k)) for r in rows)) if rows else len(k) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    for row in rows:
        lines.append("  ".join(cell(row, k).ljust(widths[k]) for k in keys))
        if text := note(row):
            lines.append(f"    {text}")
    return "\n".join(lines)
