"""`auto`'s fallback and its refusals (issue 13, items 4 and 5): ops with no translation run as `ferry.RawOp`
(converted, verified at 1e-5, exported, listed by `ferry inspect`, the mapping report and MLflow), and graphs
`auto` cannot convert fail with a ferry error naming a node for each thing, never a raw exception."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_tf1_script
from mlflow.tracking import MlflowClient

from ferry.cli import main
from ferry.keras3.build import check_architecture
from ferry.shards import load_shard
from ferry.spec import ModelSpec, load_spec
from ferry.stages import WorkDir
from ferry.tf1.auto import HANDLERS, UnsupportedGraph, translate
from ferry.tf1.auto.registry import Handler, Unsupported
from ferry.tf1.load import load_graph
from ferry.tf1.session import run_tf1
from tasks.export import call_savedmodel, export_savedmodel
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import restore_weights
from tasks.verify import verify_shard_records

FALLBACK_OPS = {"Atan2", "Cumprod", "Lgamma", "Roll", "Betainc", "BroadcastTo", "Qr"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fallback")
    run_tf1_script(REPO / "tests" / "tf1_builders" / "auto_fallback.py", out)
    return out


def spec_for(folder: Path, tmp_path: Path) -> ModelSpec:
    found = json.loads((folder / "manifest.json").read_text())
    return ModelSpec.model_validate({
        "name": folder.name, "source": {"meta": folder / "model.ckpt.meta", **found}, "architecture": "auto",
        "name_map": {"skip": ["optimizer"]}, "export": {"dir": tmp_path / "export"},
        "verify": {"shards": str(folder / "shards" / "*.npz"), "tolerance": {"atol": 1e-5, "rtol": 1e-5}}})


@pytest.mark.tf1
def test_ops_without_translation_convert_verify_and_export(built, tmp_path, monkeypatch):
    spec = spec_for(built / "fallback", tmp_path)
    work = WorkDir(tmp_path / "work")
    inspected = inspect_graph(spec, work)
    info = reconstruct(spec, inspected)
    assert set(info["auto"]["fallback_ops"]) == FALLBACK_OPS
    nodes = {n["name"]: n for n in info["auto"]["architecture"]["graph"]["nodes"]}
    cumprod = nodes["cumprod"]
    assert (cumprod["class"], cumprod["op_type"], cumprod["attrs"]) == ("ferry.RawOp", "Cumprod",
                                                                          {"exclusive": True, "reverse": True})
    assert cumprod["operands"][1] == {"arg": "axis", "constant": 1, "dtype": "int32"}  # constants in config; no `T`
    assert nodes["broadcast"]["anchored"] and nodes["qr.1"] == {"name": "qr.1", "class": "ferry.Pick",
                                                                 "inputs": ["qr.outputs"], "index": 1}
    rules = {r["from"]: r["to"] for r in info["auto"]["rules"]}
    assert (rules["scale"], rules["b"], rules["table"]) == ("angle/x", "betainc/b", "broadcast/input")

    restored = restore_weights(spec, info, inspected, work)
    assert restored["coverage"]["model_weights"] == 1.0 and restored["coverage"]["checkpoint_keys"] == 1.0
    report = json.loads(Path(restored["mapping"]).read_text())
    assert set(report["fallback_ops"]) == FALLBACK_OPS
    for i, shard in enumerate(spec.shard_paths()):
        record = verify_shard_records(spec, info, restored, shard, i)
        assert record["passed"], record
        assert all(out["max_abs_err"] <= 1e-5 for out in record["outputs"].values())

    exported = export_savedmodel(spec, info, restored, spec.shard_paths()[0])
    keras_record = exported["keras"]  # the .keras saved and reloaded in this process (TensorFlow backend)
    assert keras_record["outputs"]["y"]["passed"] and not keras_record["portable"]
    assert keras_record["non_portable"] == ["ferry.keras3.raw_op.RawOp"]
    arrays = load_shard(spec, spec.shard_paths()[1])
    got, want = call_savedmodel(spec, exported["path"], arrays), run_tf1(spec, arrays, 8, "/CPU:0")
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-5, rtol=1e-5)

    from ferry.review.records import log_stage_files
    from ferry.review.tracking import start_catalogue_run, start_model_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "pyproject.toml").write_text("")  # the project root: the MLflow journal lands here
    (tmp_path / "catalogue.yaml").write_text("models: []\n")
    parent = start_catalogue_run(tmp_path / "catalogue.yaml", "fallback-test", "catalogue run")
    run = start_model_run(parent, "fallback", "fallback-test")
    log_stage_files(run, work, {"restore": 1.0})
    run.end(True)
    data = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run.run_id).data
    listed = ", ".join(sorted(FALLBACK_OPS))
    assert data.tags["auto.fallback_ops"] == listed and data.params["auto.fallback_ops"] == listed
    assert data.tags["tf.grappler.arithmetic_optimization"] == "off"  # beside env.TF_ENABLE_ONEDNN_OPTS


REFUSED = {"GatherV2": "columns", "MatMul": "MatMul", "Cumsum": "running", "TopKV2": "top", "Reshape": "pairs",
           "ConcatV2": "wide", "Shape": "Shape"}  # op type -> its node, whose form is refused


@pytest.mark.tf1
def test_forms_a_handler_refuses_run_as_raw_ops_flagged_like_ops_without_one(built, tmp_path, monkeypatch):
    """A gather along axis 1 of a variable, a MatMul of two tensors, an exclusive cumsum along the batch, an unsorted
    top-k, a reshape to a shape computed at run time, a concat on a non-constant axis: their handlers refuse these
    forms, so they run as `ferry.RawOp` (the gather's table a weight of the layer), flagged as
    fallbacks in the translation, the mapping report and MLflow; the model verifies and exports."""
    spec = spec_for(built / "refused", tmp_path)
    work = WorkDir(tmp_path / "work")
    inspected = inspect_graph(spec, work)
    info = reconstruct(spec, inspected)
    assert info["auto"]["fallback_ops"] == REFUSED
    nodes = {n["name"]: n for n in info["auto"]["architecture"]["graph"]["nodes"]}
    raw = {n["op_type"]: name for name, n in nodes.items() if n.get("class") == "ferry.RawOp"}
    assert raw == {**REFUSED, "TopKV2": "top.outputs"}  # two outputs: one layer, a `ferry.Pick` of the values
    assert nodes["columns"]["anchored"] and nodes["fc1"]["class"] == "Dense"  # the handlers' other forms stay
    # the table: the RawOp's weight, bound once (not an Embedding's)
    assert [r["to"] for r in info["auto"]["rules"] if r["from"] == "table"] == ["columns/params"]
    assert not any(n.get("class") == "Embedding" for n in nodes.values())

    restored = restore_weights(spec, info, inspected, work)
    assert restored["coverage"]["model_weights"] == 1.0 and restored["coverage"]["checkpoint_keys"] == 1.0
    assert json.loads(Path(restored["mapping"]).read_text())["fallback_ops"] == REFUSED
    for i, shard in enumerate(spec.shard_paths()):
        record = verify_shard_records(spec, info, restored, shard, i)
        assert record["passed"], record
    exported = export_savedmodel(spec, info, restored, spec.shard_paths()[0])
    assert exported["keras"]["outputs"]["y"]["passed"] and not exported["keras"]["portable"]
    arrays = load_shard(spec, spec.shard_paths()[1])
    got, want = call_savedmodel(spec, exported["path"], arrays), run_tf1(spec, arrays, 8, "/CPU:0")
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-5, rtol=1e-5)

    from ferry.review.records import log_stage_files
    from ferry.review.tracking import start_catalogue_run, start_model_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "catalogue.yaml").write_text("models: []\n")
    run = start_model_run(start_catalogue_run(tmp_path / "catalogue.yaml", "refused-test", "catalogue run"),
                          "refused", "refused-test")
    log_stage_files(run, work, {"restore": 1.0})
    run.end(True)
    data = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run.run_id).data
    assert data.tags["auto.fallback_ops"] == ", ".join(sorted(REFUSED))


@pytest.mark.unit
def test_a_refused_form_leaves_what_its_handler_began_and_keeps_its_inputs():
    """A handler that emitted its input, a node of its own and a rule before refusing: its node and rule are
    dropped, the input's node stays (emitted once), and the op runs as a `ferry.RawOp`."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        tf.identity(tf.nn.relu(tf.abs(x, name="mag"), name="act"), name="y")

    def refuses_late(tr, op, tensor):
        tr.add("act.begun", [tr.node(op.inputs[0])], op="negative")
        tr.bind("some/variable", "act.begun/kernel")
        raise Unsupported("Relu(this form)", op.name)

    saved = HANDLERS["Relu"]
    HANDLERS["Relu"] = Handler(refuses_late, saved.reads_variables)
    try:
        out = translate(graph, {"x": "x:0"}, {"y": "y:0"}, "odd")
    finally:
        HANDLERS["Relu"] = saved
    assert [(n["name"], n.get("class", n.get("op"))) for n in out.nodes] == [("mag", "abs"), ("act", "ferry.RawOp")]
    assert out.rules == [] and out.fallbacks == {"Relu": "act"}


@pytest.mark.unit
def test_a_refused_form_of_a_stateful_op_stays_refused_with_the_handlers_reason():
    """Only stateless ops fall back: a handler refusing a form of a stateful op (here simulated on
    `RandomUniform`, which has no handler) is reported with its own reason, as before."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        tf.identity(x + tf.random.uniform([4], name="noise"), name="y")

    def refuses(tr, op, tensor):
        raise Unsupported("RandomUniform(this form)", op.name)

    HANDLERS["RandomUniform"] = Handler(refuses, False)
    try:
        with pytest.raises(UnsupportedGraph) as err:
            translate(graph, {"x": "x:0"}, {"y": "y:0"}, "odd")
    finally:
        del HANDLERS["RandomUniform"]
    [(op_type, node)] = err.value.found.items()
    assert op_type == "RandomUniform(this form)" and graph.get_operation_by_name(node).type == "RandomUniform"


@pytest.mark.tf1
def test_inspect_and_the_draft_warn_of_the_fallback_ops_with_one_node_each(built, tmp_path, capsys):
    meta = built / "fallback" / "model.ckpt.meta"
    draft = tmp_path / "models" / "fallback.yaml"
    assert main(["draft-spec", str(meta), "-o", str(draft)]) == 0
    text = draft.read_text()
    assert "run as raw TF ops" in text and "#   Lgamma: lgamma" in text and "class: ferry.RawOp" in text
    assert check_architecture(load_spec(draft)) == []  # the drafted graph form validates as written
    assert main(["inspect", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "translates, with a warning" in out
    for op_type, node in (("Cumprod", "cumprod"), ("Lgamma", "lgamma"), ("Qr", "qr")):
        assert any(line.split() == [op_type, node] for line in out.splitlines()), out
    assert main(["inspect", str(meta), "--json"]) == 0
    auto = json.loads(capsys.readouterr().out)["auto"]
    assert auto["supported"] and set(auto["fallback_ops"]) == FALLBACK_OPS


# Each odd graph (tests/tf1_builders/auto_fallback.py): what `auto` says of it (op type listed -> the node named,
# or the start of its name).
ODD = {
    # the Reshape itself would run raw (its handler refuses a fed shape); the input's unknown rank still blocks
    "reshape_unknown_rank": {"input of unknown rank (give the placeholder a shape)": "shape"},
    "cond_on_fed_predicate": {"Switch(non-constant predicate)": "cond/"},
    "queue_input": {"QueueDequeueV2(a queue, reader or iterator: feed its output as a spec input instead)": "dequeue"},
    "py_func": {"PyFunc(py_func: Python code the graph does not hold)": "double"},
    "random_at_inference": {"RandomUniform(a random op at inference)": "noise/RandomUniform"},
    "while_loop": {"while loop (not a dynamic_rnn with one input and one output)": "loop/Exit"},
}


@pytest.mark.tf1
@pytest.mark.parametrize("case", sorted(ODD))
def test_graphs_auto_cannot_convert_name_a_node_for_each_thing(built, case):
    folder = built / "odd" / case
    found = json.loads((folder / "manifest.json").read_text())
    graph = load_graph(folder / "model.meta")
    with pytest.raises(UnsupportedGraph) as err:
        translate(graph, found["inputs"], found["outputs"], case)
    for op_type, node in err.value.found.items():
        graph.get_operation_by_name(node)  # a node of the graph, whatever failed
        assert f"{op_type} (e.g. {node})" in str(err.value)
    for op_type, node in ODD[case].items():
        assert err.value.found.get(op_type, "").startswith(node), err.value.found


@pytest.mark.unit
def test_a_translation_that_raises_is_named_at_its_node():
    """A handler raising on odd attributes (here: a bug, simulated) is reported at the node, as a ferry error."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        tf.identity(tf.nn.relu(x * 2.0, name="act"), name="y")

    def broken(tr, op, tensor):
        raise TypeError("unexpected attribute value")

    saved = HANDLERS["Relu"]
    HANDLERS["Relu"] = Handler(broken, saved.reads_variables)
    try:
        with pytest.raises(UnsupportedGraph) as err:
            translate(graph, {"x": "x:0"}, {"y": "y:0"}, "odd")
    finally:
        HANDLERS["Relu"] = saved
    assert err.value.found == {"Relu(translation failed, TypeError: unexpected attribute value)": "act"}
