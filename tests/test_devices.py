"""The multi-device path on logical devices: a model's process split into three logical CPU devices (what it
does with several GPUs), its shards verified at once from threads as the flow submits them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import restore_stages, spec_of

from ferry.isolation import ModelProcess

pytestmark = pytest.mark.tf1

SHARDS = 7  # over 3 devices: two rounds and a bit, so each device runs shards one after another


def seven_shard_mlp(catalogue: Path, work: Path):
    """The example MLP with its shards copied into seven."""
    spec = spec_of(catalogue, "mlp")
    data = work / "shards"
    data.mkdir(parents=True)
    originals = spec.shard_paths()
    for i in range(SHARDS):
        shutil.copy(originals[i % len(originals)], data / f"shard-{i}.npz")
    return spec.model_copy(update={"verify": spec.verify.model_copy(update={"shards": str(data / "*.npz")})})


def busy(events: list[tuple[str, str]]) -> tuple[dict[str, int], int]:
    """From start/end events: the most shards running at once on each device, and on all devices together."""
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    most_overall = 0
    for kind, device in events:
        running[device] = running.get(device, 0) + (1 if kind == "start" else -1)
        most[device] = max(most.get(device, 0), running[device])
        most_overall = max(most_overall, sum(running.values()))
    return most, most_overall


def test_shards_spread_over_logical_devices_one_at_a_time_each(catalogue, tmp_path):
    spec = seven_shard_mlp(catalogue, tmp_path)
    info, restored = restore_stages(spec, tmp_path / "work")

    with ModelProcess("mlp", cpu_devices=3) as process:
        records, events = process.call("tests.isolation_helpers:verify_concurrently", spec, info, restored)
    with ModelProcess("mlp") as process:
        alone, _ = process.call("tests.isolation_helpers:verify_concurrently", spec, info, restored)

    devices = [f"/device:CPU:{i % 3}" for i in range(SHARDS)]
    assert [r["device"] for r in records] == devices  # round-robin, recorded in each shard's record
    assert [r["device"] for r in alone] == ["/device:CPU:0"] * SHARDS
    per_device, overall = busy(events)
    assert per_device == {d: 1 for d in set(devices)}  # never two shards on one device at once ...
    assert overall >= 2  # ... while the devices ran side by side
    assert all(r["passed"] for r in records)
    # the same numbers as on one device: the spread changes where shards run, not what they compute
    assert [(r["shard"], r["rows"], r["outputs"]) for r in records] == \
        [(r["shard"], r["rows"], r["outputs"]) for r in alone]
