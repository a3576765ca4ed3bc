"""Stage 4: run the TF1 graph and the Keras model on one dataset shard and compare every output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferry.cache import fingerprint
from ferry.files import write_atomically
from ferry.keras3.run import device_for, load_keras, run_keras
from ferry.parity import ParityError, compare
from ferry.shards import check_signature, load_shard
from ferry.spec import ModelSpec
from ferry.stages import Reconstructed, Restored, ShardParity, WorkDir
from ferry.tf1.session import run_tf1
from tasks import stage_logger


def verify_shard_records(spec: ModelSpec, reconstructed: Reconstructed, restored: Restored, shard: str | Path,
                         index: int, work: WorkDir | None = None) -> ShardParity:
    """The parity record of one shard (no raising): per output max/mean abs, max rel, argmax.

    With `work`, also save both models' outputs (`<output>.reference`, `<output>.candidate`) to its
    `shard_outputs(index)`, for the review plots."""
    device = device_for(index)
    arrays = load_shard(spec, Path(shard))
    check_signature(arrays, reconstructed["inputs"], f"{spec.spec_file}: verify.shards: {Path(shard).name}")
    batch = spec.verify.batch_size
    reference = run_tf1(spec, arrays, batch, device)
    candidate = run_keras(spec, load_keras(spec, reconstructed, restored["weights"]), arrays, batch, device)
    outputs = {name: compare(candidate[name], reference[name], spec.verify.tolerance_for(name))
               for name in spec.source.outputs}
    record: ShardParity = {"shard": str(shard), "index": index, "device": device,
                           "rows": len(next(iter(arrays.values()))),
                           "passed": all(o["passed"] for o in outputs.values()), "outputs": outputs}
    if work is not None:
        path = work.shard_outputs(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        both = {f"{name}.{side}": values[name] for side, values in (("reference", reference), ("candidate", candidate))
                for name in spec.source.outputs}
        write_atomically(path, lambda tmp: np.savez(tmp, **both), ".tmp.npz")
        record["files"] = {str(path): fingerprint(path)}
    return record


def verify_shard(spec: ModelSpec, reconstructed: Reconstructed, restored: Restored, shard: str | Path, index: int,
                 work: WorkDir | None = None) -> ShardParity:
    """Verify one shard; raise ParityError (carrying the record) when out of tolerance."""
    record = verify_shard_records(spec, reconstructed, restored, shard, index, work)
    worst = max(o.get("max_abs_err", float("inf")) for o in record["outputs"].values())
    stage_logger().info("%s: shard %d (%s) on %s %s (max abs err %.3g)", spec.name, index, Path(shard).name,
                        record["device"], "passed" if record["passed"] else "FAILED", worst)
    if not record["passed"]:
        raise ParityError(record)
    return record
