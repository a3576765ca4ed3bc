"""Stage 4: run the TF1 graph and the Keras model on one dataset shard and compare every output, batch by
batch: the shard is streamed, never held whole, and so are both sides' outputs (parity accumulates; the
review plots get a bounded sample)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ferry.cache import fingerprint
from ferry.files import write_atomically
from ferry.keras3.run import device_for, load_keras, run_batch
from ferry.parity import Parity, ParityError
from ferry.shards import check_signature, stream_shard
from ferry.spec import ModelSpec
from ferry.stages import Reconstructed, Restored, ShardParity, WorkDir
from ferry.tf1.session import reference
from tasks import stage_logger

_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def device_lock(device: str) -> threading.Lock:
    """The lock a shard holds while it runs on `device`."""
    with _LOCKS_LOCK:
        return _DEVICE_LOCKS.setdefault(device, threading.Lock())


PLOT_FIRST = 65_536  # elements per output and shard kept for the review plots ...
PLOT_WORST = 256  # ... and the ones with the largest errors


class PlotSample:
    """Both sides' values of one output for the plots, bounded: the first `PLOT_FIRST` elements and the
    `PLOT_WORST` worst (NaN/inf disagreements count as worst)."""

    def __init__(self) -> None:
        self.first: list[tuple[np.ndarray, np.ndarray]] = []
        self.kept = 0
        self.worst = (np.empty(0), np.empty(0), np.empty(0))  # reference, candidate, error

    def add(self, candidate: np.ndarray, reference: np.ndarray) -> None:
        cand, ref = candidate.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
        if cand.shape != ref.shape:
            return
        if self.kept < PLOT_FIRST:
            take = PLOT_FIRST - self.kept
            self.first.append((ref[:take], cand[:take]))
            self.kept += min(take, ref.size)
        err = np.nan_to_num(np.abs(cand - ref), nan=np.inf)
        pool = [np.concatenate([w, v]) for w, v in zip(self.worst, (ref, cand, err))]
        keep = np.argpartition(-pool[2], PLOT_WORST)[:PLOT_WORST] if pool[2].size > PLOT_WORST else slice(None)
        self.worst = tuple(a[keep] for a in pool)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(reference, candidate), flat."""
        first = [np.concatenate(side) for side in zip(*self.first)] if self.first else [np.empty(0)] * 2
        return np.concatenate([first[0], self.worst[0]]), np.concatenate([first[1], self.worst[1]])


def verify_shard_records(spec: ModelSpec, reconstructed: Reconstructed, restored: Restored, shard: str | Path,
                         index: int, work: WorkDir | None = None) -> ShardParity:
    """The parity record of one shard (no raising): per output max/mean abs, max rel, top-1/top-5 agreement.

    The shard is read `verify.batch_size` rows at a time; each batch goes through the TF1 reference and the
    compiled Keras model (both made once per process). With `work`, a bounded sample of both models'
    outputs (`<output>.reference`, `<output>.candidate`) goes to its `shard_outputs(index)`, for the plots."""
    device = device_for(index)
    with device_lock(device):  # one shard per device at a time: memory stays that of one batch per device
        return _verify_on(device, spec, reconstructed, restored, Path(shard), index, work)


def _verify_on(device: str, spec: ModelSpec, reconstructed: Reconstructed, restored: Restored, shard: Path,
               index: int, work: WorkDir | None) -> ShardParity:
    tf1 = reference(spec, device)
    model = load_keras(spec, reconstructed, restored["weights"])
    parities = {name: Parity(spec.verify.tolerance_for(name)) for name in spec.source.outputs}
    samples = {name: PlotSample() for name in spec.source.outputs}
    rows = 0
    for i, batch in enumerate(stream_shard(spec, Path(shard), spec.verify.batch_size)):
        if i == 0:
            check_signature(batch, reconstructed["inputs"], f"{spec.spec_file}: verify.shards: {Path(shard).name}")
        expected = tf1.run_batch(batch)
        got = run_batch(spec, model, batch, reconstructed["inputs"], device)
        for name in spec.source.outputs:
            parities[name].add(got[name], expected[name])
            samples[name].add(got[name], expected[name])
        rows += len(next(iter(batch.values())))
    outputs = {name: parity.result() for name, parity in parities.items()}
    record: ShardParity = {"shard": str(shard), "index": index, "device": device, "rows": rows,
                           "passed": all(o["passed"] for o in outputs.values()), "outputs": outputs}
    if work is not None:
        path = work.shard_outputs(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        both = {f"{name}.{side}": values for name, sample in samples.items()
                for side, values in zip(("reference", "candidate"), sample.arrays())}
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
