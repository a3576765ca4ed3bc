"""`architecture: auto` on TF1 recurrent networks (issue 13): real `rnn_cell` cells in every form `auto`
translates (tests/tf1_builders/rnn_graphs.py: dynamic_rnn read for its final states, MultiRNNCell,
bidirectional_dynamic_rnn with lengths, peepholes and a projection, GRU, BasicRNNCell, contrib's fused cells,
static_rnn), trained a few steps and saved by TF1, convert and match the TF1 graph at 1e-5 on every shard;
their drafted specs migrate unchanged (stage by stage, and by the flow); and a model using ferry's recurrent
layers exports to `.keras`, which reloads with `import ferry.keras3.layers` and matches TF1 on JAX too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, run_tf1_script

from ferry.cli import main
from ferry.shards import load_shard
from ferry.spec import ModelSpec, load_spec
from ferry.stages import WorkDir
from ferry.tf1.auto import UnsupportedGraph, translate
from ferry.tf1.load import load_graph
from flows.migrate import migrate_catalogue
from tasks.export import export_savedmodel
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import restore_weights
from tasks.verify import verify_shard_records

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
# model -> the recurrent layers it becomes (a MaskedRNN as `MaskedRNN(<its layer>)`)
LAYERS = {
    "final_state": {"LSTM"},
    "stacked_lengths": {"MaskedRNN(LSTM)"},
    "bidirectional": {"MaskedRNN(LSTM)"},
    "peephole_projection": {"MaskedRNN(ferry.TF1LSTM)"},
    "gru": {"GRU"},
    "basic_rnn": {"SimpleRNN"},
    "block_cells": {"ferry.TF1LSTM", "MaskedRNN(GRU)", "LSTM"},
    "static_rnn": {"GRU", "LSTM"},
}
RECURRENT = {"LSTM", "GRU", "SimpleRNN", "ferry.TF1LSTM", "ferry.MaskedRNN"}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rnn")
    run_tf1_script(REPO / "tests" / "tf1_builders" / "rnn_graphs.py", out)
    return out


def auto_spec(folder: Path, tmp_path: Path) -> ModelSpec:
    """The model's spec with `architecture: auto`, verified at 1e-5."""
    found = json.loads((folder / "manifest.json").read_text())
    return ModelSpec.model_validate({
        "name": folder.name, "source": {"meta": folder / "model.ckpt.meta", **found}, "architecture": "auto",
        "name_map": {"skip": ["optimizer"]}, "export": {"dir": tmp_path / "export" / folder.name},
        "verify": {"shards": str(folder / "shards" / "*.npz"), "tolerance": TOLERANCE}})


def migrated(spec: ModelSpec, work: Path) -> tuple[dict, dict, list[dict]]:
    """inspect, reconstruct, restore and verify every shard, as the flow runs them: (model info, restore's
    result, the shard records)."""
    inspected = inspect_graph(spec, WorkDir(work))
    info = reconstruct(spec, inspected)
    restored = restore_weights(spec, info, inspected, WorkDir(work))
    records = [verify_shard_records(spec, info, restored, shard, i) for i, shard in enumerate(spec.shard_paths())]
    return info, restored, records


def layer_classes(nodes: list[dict]) -> set[str]:
    return {f"MaskedRNN({n['layer']['class']})" if n.get("class") == "ferry.MaskedRNN" else n["class"]
            for n in nodes if n.get("class") in RECURRENT}


@pytest.mark.tf1
@pytest.mark.parametrize("name", LAYERS)
def test_rnn_converts_and_matches_the_tf1_graph(graphs, tmp_path, name):
    spec = auto_spec(graphs / name, tmp_path)
    info, restored, records = migrated(spec, tmp_path)
    assert restored["coverage"]["model_weights"] == 1.0
    assert layer_classes(info["auto"]["architecture"]["graph"]["nodes"]) == LAYERS[name]
    assert len(records) == 2
    for record in records:
        assert set(record["outputs"]) == set(spec.source.outputs)
        for out in record["outputs"].values():
            assert out["passed"] and out["max_abs_err"] <= 1e-5, out
    print(name, max(out["max_abs_err"] for r in records for out in r["outputs"].values()))


@pytest.mark.tf1
def test_rnn_layers_are_named_after_the_cells_and_bound_by_transforms(graphs, tmp_path):
    spec = auto_spec(graphs / "bidirectional", tmp_path)
    info = reconstruct(spec, inspect_graph(spec, WorkDir(tmp_path)))
    nodes = {n["name"]: n for n in info["auto"]["architecture"]["graph"]["nodes"]}
    backward = nodes["bidirectional_rnn.bw.lstm_cell"]
    assert backward["inputs"] == ["embedding", "lengths"]
    assert backward["layer"] == {"class": "LSTM", "units": 10, "go_backwards": True, "zero_output_for_mask": True,
                                 "name": "rnn", "return_state": True, "return_sequences": True}
    assert nodes["bidirectional_rnn.bw.lstm_cell.unreversed"] == {
        "name": "bidirectional_rnn.bw.lstm_cell.unreversed", "op": "flip",
        "inputs": ["bidirectional_rnn.bw.lstm_cell.sequence"], "axis": 1}
    assert {"from": "bidirectional_rnn/bw/lstm_cell", "to": "bidirectional_rnn.bw.lstm_cell/rnn/lstm_cell",
            "match": "exact", "transform": {"lstm": {"forget_bias": 1.0}}} in info["auto"]["rules"]

    spec = auto_spec(graphs / "peephole_projection", tmp_path)
    info = reconstruct(spec, inspect_graph(spec, WorkDir(tmp_path)))
    [lstm] = [n for n in info["auto"]["architecture"]["graph"]["nodes"] if n["name"] == "rnn.lstm_cell"]
    assert {k: lstm["layer"][k] for k in ("class", "units", "num_proj", "use_peepholes", "cell_clip", "proj_clip")} == {
        "class": "ferry.TF1LSTM", "units": 12, "num_proj": 6, "use_peepholes": True, "cell_clip": 0.6,
        "proj_clip": 0.25}
    rules = {r["from"]: r for r in info["auto"]["rules"]}
    assert rules["rnn/lstm_cell/projection/kernel"]["to"] == "rnn.lstm_cell/rnn/lstm_cell/projection_kernel"
    assert rules["rnn/lstm_cell/w_f_diag"]["to"] == "rnn.lstm_cell/rnn/lstm_cell/w_f_diag"


@pytest.mark.tf1
def test_rnn_forms_auto_does_not_translate_are_named(graphs):
    meta = graphs / "unsupported" / "model.ckpt.meta"
    found = json.loads((graphs / "unsupported" / "manifest.json").read_text())
    with pytest.raises(UnsupportedGraph) as err:
        translate(load_graph(meta), found["inputs"], found["outputs"], str(meta))
    assert err.value.found["dynamic_rnn(initial_state)"] == "given/while/Exit_3"
    assert err.value.found["dynamic_rnn(outputs not the top cell's)"].startswith("residual/while/")
    assert any(node.startswith("static/") for node in err.value.found.values())  # static_rnn with lengths: its conds
    with pytest.raises(UnsupportedGraph) as err:  # the final state named as the output itself
        translate(load_graph(meta), found["inputs"], {"state": "given/while/Exit_3:0"}, str(meta))
    assert err.value.found == {"dynamic_rnn(initial_state)": "given/while/Exit_3"}


@pytest.mark.tf1
def test_drafted_rnn_specs_migrate_unchanged(graphs, tmp_path):
    """`ferry draft-spec` writes the translation as a graph spec (ferry's layers, their nested layer config, the
    Pick nodes, the rules) that validates and migrates as written."""
    for name in ("stacked_lengths", "bidirectional", "peephole_projection", "block_cells", "static_rnn"):
        path = tmp_path / "models" / f"{name}.yaml"
        assert main(["draft-spec", str(graphs / name / "model.ckpt.meta"), "-o", str(path)]) == 0
        spec = load_spec(path)
        assert spec.architecture != "auto" and spec.verify.tolerance.atol == 1e-5
        _, restored, records = migrated(spec, tmp_path / "work" / name)
        assert restored["coverage"]["model_weights"] == 1.0
        assert "probs" in spec.source.outputs and all(r["passed"] for r in records), (name, records)


@pytest.mark.tf1
@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_drafted_rnn_specs_migrate_with_the_flow(graphs, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "specs"
    names = ("bidirectional", "peephole_projection", "block_cells", "static_rnn")
    for name in names:
        out = folder / "models" / f"{name}.yaml"
        assert main(["draft-spec", str(graphs / name / "model.ckpt.meta"), "-o", str(out)]) == 0
    (folder / "catalogue.yaml").write_text("models: [models/*.yaml]\ntracking: {experiment: rnn-drafts}\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["validate", str(folder / "catalogue.yaml")]) == 0
    assert f"{len(names)} of {len(names)} specs valid" in capsys.readouterr().out
    rows = migrate_catalogue(str(folder / "catalogue.yaml"))
    assert sorted(r["model"] for r in rows) == sorted(names)
    assert all(r["status"] == "passed" and r["coverage"] == 1.0 for r in rows), rows


@pytest.mark.tf1
def test_keras_export_of_ferry_rnn_layers_reloads_and_matches_on_jax(graphs, tmp_path):
    from test_export import LOAD_KERAS, keras_job, reference_npz, run_python

    jobs = []
    for name in ("bidirectional", "peephole_projection", "block_cells"):
        spec = auto_spec(graphs / name, tmp_path)
        inspected = inspect_graph(spec, WorkDir(tmp_path / name))
        info = reconstruct(spec, inspected)
        restored = restore_weights(spec, info, inspected, WorkDir(tmp_path / name))
        exported = export_savedmodel(spec, info, restored, spec.shard_paths()[0])
        keras_record = exported["keras"]
        assert keras_record["portable"] and all(out["passed"] for out in keras_record["outputs"].values())
        assert set(keras_record["custom_layers"]) >= {"ferry.keras3.layers.Pick"}
        jobs.append(keras_job(spec, exported, reference_npz(spec, tmp_path / f"{name}.npz")))
    loaded = run_python(LOAD_KERAS, json.dumps(jobs), cwd=tmp_path, KERAS_BACKEND="jax")
    assert loaded["backend"] == "jax" and "tensorflow" not in loaded["imported"]
    failed = {job["name"]: out for job in jobs for out in loaded["results"][job["name"]].values() if not out["passed"]}
    assert not failed, loaded["results"]


@pytest.mark.tf1
def test_export_rechecks_a_time_major_output_in_small_batches(graphs, tmp_path):
    """LSTMBlockFusedCell's outputs are time-major ([time, batch, units]): export's re-checks batch the
    SavedModel like the in-memory model, so the batches line up."""
    spec = auto_spec(graphs / "block_cells", tmp_path)
    spec = spec.model_copy(update={"verify": spec.verify.model_copy(update={"batch_size": 4})})
    info, restored, _ = migrated(spec, tmp_path)
    rows = len(next(iter(load_shard(spec, spec.shard_paths()[0]).values())))
    assert rows > 4  # more than one batch
    exported = export_savedmodel(spec, info, restored, spec.shard_paths()[0])
    assert all(out["passed"] for out in exported["outputs"].values()), exported["outputs"]
    assert all(out["passed"] for out in exported["keras"]["outputs"].values()), exported["keras"]["outputs"]
