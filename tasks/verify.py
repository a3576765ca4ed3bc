"""Stage 4: run the TF1 graph and the Keras model on one dataset shard and compare every output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ferry.cache import fingerprint
from ferry.parity import ParityError, compare
from ferry.paths import temporary_sibling
from ferry.runtime import device_for, load_keras, load_shard, run_keras, run_tf1
from ferry.shards import check_signature
from ferry.spec import ModelSpec
from tasks import stage_logger


def verify_shard_records(spec: ModelSpec, model_info: dict[str, Any], weights: str, shard: Path,
                         index: int, outputs_file: str | None = None) -> dict[str, Any]:
    """The parity record of one shard (no raising): per output max/mean abs, max rel, argmax.

    `outputs_file`: also save both models' outputs there (`<output>.reference`, `<output>.candidate`),
    for the review plots."""
    device = device_for(index)
    arrays = load_shard(spec, Path(shard))
    check_signature(arrays, model_info["inputs"], f"{spec.spec_file}: verify.shards: {Path(shard).name}")
    batch = spec.verify.batch_size
    reference = run_tf1(spec, arrays, batch, device)
    candidate = run_keras(spec, load_keras(spec, model_info, weights), arrays, batch, device)
    outputs = {name: compare(candidate[name], reference[name], spec.verify.tolerance_for(name))
               for name in spec.source.outputs}
    record = {"shard": str(shard), "index": index, "device": device, "rows": len(next(iter(arrays.values()))),
              "passed": all(o["passed"] for o in outputs.values()), "outputs": outputs}
    if outputs_file:
        path = Path(outputs_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_sibling(path, ".tmp.npz")
        try:
            np.savez(tmp, **{f"{name}.{side}": values[name] for side, values in
                             (("reference", reference), ("candidate", candidate)) for name in spec.source.outputs})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        record["files"] = {str(path): fingerprint(path)}
    return record


def verify_shard(spec: ModelSpec, model_info: dict[str, Any], weights: str, shard: Path | str,
                 index: int, outputs_file: str | None = None) -> dict[str, Any]:
    """Verify one shard; raise ParityError (carrying the record) when out of tolerance."""
    record = verify_shard_records(spec, model_info, weights, shard, index, outputs_file)
    worst = max(o.get("max_abs_err", float("inf")) for o in record["outputs"].values())
    stage_logger().info("%s: shard %d (%s) on %s %s (max abs err %.3g)", spec.name, index, Path(shard).name,
                        record["device"], "passed" if record["passed"] else "FAILED", worst)
    if not record["passed"]:
        raise ParityError(record)
    return record
