"""The house keeps its rules: the flow side never imports TensorFlow, and a model's process reads its TF1
graph at most twice (once to analyse it, once as the Session reference) and builds the Keras model once,
however many shards it verifies. Counted, not timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

FLOW_SIDE = ["flows.migrate", "ferry.cli", "ferry.spec", "ferry.stages", "ferry.cache", "ferry.isolation",
             "ferry.prefect_api", "ferry.parity", "ferry.divergence", "ferry.shards", "ferry.data", "ferry.export_dir",
             "ferry.facts",
             "ferry.files", "ferry.mapping.namemap", "ferry.mapping.transforms", "tasks.stages",
             *sorted(f"ferry.review.{p.stem}" for p in (REPO / "ferry" / "review").glob("*.py")
                     if p.stem != "__init__")]


def run_python(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.unit
def test_the_flow_side_never_imports_tensorflow():
    imported = run_python(
        "import importlib, json, sys\n"
        f"for m in {FLOW_SIDE!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))\n")
    assert imported == []
    assert "ferry.review.tracking" in FLOW_SIDE and "ferry.review.registry" in FLOW_SIDE


ONE_MODEL = """
import json, sys
from pathlib import Path
from ferry.spec import load_catalogue
from ferry.stages import WorkDir
from ferry.tf1.load import IMPORTS
from ferry.keras3.build import BUILDS
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import restore_weights
from tasks.verify import verify_shard
from tasks.export import export_savedmodel

spec = load_catalogue(Path(sys.argv[1]), only=[sys.argv[2]]).specs[sys.argv[2]]
work = WorkDir(Path(sys.argv[3]))
inspected = inspect_graph(spec, work=work)
reconstructed = reconstruct(spec, inspected=inspected)
after = {"reconstruct": BUILDS[spec.name]}
restored = restore_weights(spec, reconstructed=reconstructed, inspected=inspected, work=work)
after["restore"] = BUILDS[spec.name]
shards = spec.shard_paths()
for i, shard in enumerate(shards):
    verify_shard(spec, reconstructed=reconstructed, restored=restored, shard=str(shard), index=i, work=work)
after["verify"] = BUILDS[spec.name]
export_savedmodel(spec, reconstructed=reconstructed, restored=restored, shard=str(shards[0]))
after["export"] = BUILDS[spec.name]
print(json.dumps({"imports": IMPORTS[str(spec.source.meta.resolve())], "builds": after, "shards": len(shards)}))
"""


@pytest.mark.tf1
@pytest.mark.parametrize("model", ["resnet_bn", "text_lstm"])  # epsilons and a forget bias read from the graph
def test_a_model_process_reads_its_graph_twice_and_builds_its_model_once(catalogue, tmp_path, model):
    counted = run_python(ONE_MODEL, str(catalogue), model, str(tmp_path / "work"))
    assert counted["shards"] == 4
    assert counted["imports"] == 2  # the analysis graph (inspect, reconstruct, restore) and the reference
    # one Keras model per process: reconstruct builds it, restore assigns the checkpoint to it, verify (all four
    # shards) and export run it (it was 7 builds: one per stage and one per shard, then 3: one per stage)
    assert counted["builds"] == {"reconstruct": 1, "restore": 1, "verify": 1, "export": 1}
