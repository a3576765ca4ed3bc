"""Stage 4: run the TF1 graph and the Keras model on one dataset shard and compare every output, batch by
batch: the shard is streamed, never held whole, and so are both sides' outputs (parity accumulates; the
review plots get a bounded sample). A failing shard is looked at again: a few rows of its first failing
batch with intermediate tensors on both sides, for the first divergent layer (`tasks/divergence.py`)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ferry.cache import fingerprint
from ferry.data import SERIALIZED, shard_label, split_ref, where
from ferry.divergence import FirstDivergence, first_divergence
from ferry.files import write_atomically
from ferry.keras3.run import device_for, load_keras, run_batch
from ferry.parity import Parity, ParityError
from ferry.shards import check_signature, stream_shard
from ferry.spec import ModelSpec, Tolerance
from ferry.stages import Reconstructed, Restored, ShardParity, WorkDir
from ferry.tf1.session import Reference, reference
from tasks import stage_logger
from tasks.divergence import locate

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
    file, start, _ = split_ref(shard)
    start = start or 0
    label = f"{spec.spec_file}: verify.shards: {shard_label(shard)}"
    failing = None  # the first failing batch: (its index, the batch, the failing output, its rows out of tolerance)
    for i, read in enumerate(stream_shard(spec, shard, spec.verify.batch_size)):
        size = len(next(iter(read.values())))
        first = start + rows
        records = f"{where(spec)}: {file.name}: records {first}..{first + size - 1}"
        if i == 0 and SERIALIZED not in read:  # before the TF1 graph is fed, so the error names the shard
            check_signature(read, reconstructed["inputs"], label)
        batch, expected = tf1.inputs_and_outputs(read, records)
        if i == 0 and SERIALIZED in read:  # what the graph's own parse ops made of the records
            check_signature(batch, reconstructed["inputs"], label)
        got = run_batch(spec, model, batch, reconstructed["inputs"], device)
        for name in spec.source.outputs:
            parities[name].add(got[name], expected[name])
            samples[name].add(got[name], expected[name])
            if failing is None and not parities[name].passing:
                failing = (i, batch, name, _bad_rows(got[name], expected[name], spec.verify.tolerance_for(name)))
        rows += size
    outputs = {name: parity.result() for name, parity in parities.items()}
    record: ShardParity = {"shard": str(shard), "index": index, "device": device, "rows": rows,
                           "passed": all(o["passed"] for o in outputs.values()), "outputs": outputs}
    if failing is not None:
        record["first_divergence"] = _first_divergence(spec, reconstructed, restored, tf1, model, index, failing,
                                                       device)
    if work is not None:
        path = work.shard_outputs(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        both = {f"{name}.{side}": values for name, sample in samples.items()
                for side, values in zip(("reference", "candidate"), sample.arrays())}
        write_atomically(path, lambda tmp: np.savez(tmp, **both), ".tmp.npz")
        record["files"] = {str(path): fingerprint(path)}
    return record


def _bad_rows(candidate: np.ndarray, reference: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Per row, whether any of its elements is out of tolerance (all rows when the shapes differ)."""
    if candidate.shape != reference.shape:
        return np.ones(len(reference), dtype=bool)
    close = np.isclose(candidate.astype(np.float64), reference.astype(np.float64), rtol=tol.rtol, atol=tol.atol,
                       equal_nan=tol.allow_nonfinite)
    return ~close.reshape(len(close), -1).all(axis=1)


def _first_divergence(spec: ModelSpec, reconstructed: Reconstructed, restored: Restored, tf1: Reference, model,
                      index: int, failing: tuple[int, dict[str, np.ndarray], str, np.ndarray],
                      device: str) -> FirstDivergence:
    """The first divergent layer, or (never a traceback: the verdict stands without it) why it was not found."""
    batch_index, batch, output, bad = failing
    try:
        return locate(spec, reconstructed, restored, tf1, model, batch, (index, batch_index), output, bad, device)
    except Exception as exc:  # noqa: BLE001 - the shard has failed anyway; say why there is no layer
        stage_logger().warning("%s: shard %d: the first divergent layer was not found: %s: %s", spec.name, index,
                               type(exc).__name__, exc)
        record = first_divergence([], {}, output=output, shard=index, batch=batch_index, n_rows=0,
                                  tol=spec.verify.tolerance_for(output), correspondence="")
        record["verdict"] = f"not searched: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
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
