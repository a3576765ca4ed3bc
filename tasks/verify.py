"""Stage 4: run the TF1 graph and the Keras model on one dataset shard and compare every output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ferry.parity import compare
from ferry.runtime import device_for, load_keras, load_shard, run_keras, run_tf1
from ferry.spec import ModelSpec
from tasks import stage_logger


class ParityError(AssertionError):
    """A shard whose Keras outputs are out of tolerance; carries the shard's parity record."""

    def __init__(self, record: dict[str, Any]):
        self.record = record
        worst = {name: out.get("error") or f"max abs err {out['max_abs_err']:.3g} (atol {out['atol']:g}, "
                 f"rtol {out['rtol']:g})" for name, out in record["outputs"].items() if not out["passed"]}
        super().__init__(f"shard {record['shard']} out of tolerance: {worst}")


def verify_shard_records(spec: ModelSpec, model_info: dict[str, Any], weights: str, shard: Path,
                         index: int) -> dict[str, Any]:
    """The parity record of one shard (no raising): per output max/mean abs, max rel, argmax."""
    device = device_for(index)
    arrays = load_shard(spec, Path(shard))
    batch = spec.verify.batch_size
    reference = run_tf1(spec, arrays, batch, device)
    candidate = run_keras(spec, load_keras(spec, model_info, weights), arrays, batch, device)
    outputs = {name: compare(candidate[name], reference[name], spec.verify.tolerance_for(name))
               for name in spec.source.outputs}
    return {"shard": str(shard), "index": index, "device": device, "rows": len(next(iter(arrays.values()))),
            "passed": all(o["passed"] for o in outputs.values()), "outputs": outputs}


class VerificationFailed(AssertionError):
    """The verify stage's verdict: some shards out of tolerance or not run."""


def judge(records: list[dict[str, Any]], errors: list[str], report_path: Path) -> dict[str, Any]:
    """Write the parity report over all shards; raise VerificationFailed if any shard failed."""
    report = {"shards": records, "passed": not errors and all(r["passed"] for r in records)}
    report_path.write_text(json.dumps(report, indent=1))
    problems = [str(ParityError(r)) for r in records if not r["passed"]] + errors
    if problems:
        raise VerificationFailed("; ".join(problems))
    return report


@task(name="verify_shard", task_run_name="verify-shard-{index}", cache_policy=NO_CACHE)
def verify_shard(spec: ModelSpec, model_info: dict[str, Any], weights: str, shard: Path, index: int,
                 total: int) -> dict[str, Any]:
    """Verify one shard; raise ParityError (carrying the record) when out of tolerance."""
    record = verify_shard_records(spec, model_info, weights, shard, index)
    worst = max(o.get("max_abs_err", float("inf")) for o in record["outputs"].values())
    stage_logger().info("%s: shard %d/%d on %s %s (max abs err %.3g)", spec.name, index + 1, total,
                          record["device"], "passed" if record["passed"] else "FAILED", worst)
    if not record["passed"]:
        raise ParityError(record)
    return record
