"""`auto`'s op registry: every registered op type has a handler, is tested numerically against the TF1
op (tests/tf1_builders/auto_ops.py, one tiny graph per case, in its own process) and is listed in the
README's table; and a new op is one decorated function."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import REPO, run_tf1_script

from ferry.spec import ModelSpec
from ferry.stages import WorkDir
from ferry.tf1.auto import FOLDED, FUSIONS, HANDLERS, REGISTERED, SUPPORTED, handles, translate, unsupported_ops
from ferry.tf1.auto.registry import Handler
from ferry.tf1.inventory import SHAPE_TYPES
from ferry.tf1.load import load_graph
from tasks.export import export_savedmodel
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import restore_weights
from tasks.verify import verify_shard_records

# The op cases, by family, one builder module each (`auto_ops*.py`); a case is `<module>/<case>`.
BUILDERS = sorted((REPO / "tests" / "tf1_builders").glob("auto_ops*.py"))
CASES = [f"{b.stem}/{c}" for b in BUILDERS for c in re.findall(r"^def case_(\w+)\(", b.read_text(), re.MULTILINE)]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """The folder holding one model folder per case (`<module>/<case>`), each builder in its own process."""
    out = tmp_path_factory.mktemp("auto_ops")
    for builder in BUILDERS:
        run_tf1_script(builder, out / builder.stem)
    return out


def manifest(folder: Path) -> dict[str, dict[str, str]]:
    return json.loads((folder / "manifest.json").read_text())


def path_op_types(graph: tf.Graph, inputs: list[str], outputs: list[str]) -> set[str]:
    """Op types on the data paths from `inputs` to `outputs` (tensor names): not through ops that read only
    a shape, nor inside while loops (dynamic_rnn's loop is translated as a whole; its `Exit`s, read after
    it, count)."""
    sources = [graph.get_tensor_by_name(t).op for t in inputs]
    ahead, stack = {op.name for op in sources}, list(sources)
    while stack:
        op = stack.pop()
        for user in (u for out in op.outputs for u in out.consumers()):
            if user.name not in ahead and user.type not in SHAPE_TYPES:
                ahead.add(user.name)
                stack.append(user)
    behind, stack = set(), [graph.get_tensor_by_name(t).op for t in outputs]
    while stack:
        op = stack.pop()
        if op.name not in behind:
            behind.add(op.name)
            stack.extend(t.op for t in op.inputs)
    loops, stack = set(), [op for op in graph.get_operations() if op.type == "Enter"]
    while stack:
        op = stack.pop()
        if op.name not in loops and op.type != "Exit":
            loops.add(op.name)
            stack.extend(u for out in op.outputs for u in out.consumers())
    return {graph.get_operation_by_name(name).type for name in (ahead & behind) - loops}


def handled_op_types(graph: tf.Graph, inputs: dict[str, str], outputs: dict[str, str]) -> set[str]:
    """Op types whose handler ran translating the graph: a `Fill` or a `Range` of a `tf.shape` lies on no data
    path from the inputs (only shape-reading ops lead to it), yet its nodes are part of what the case compares."""
    ran, saved = set(), dict(HANDLERS)

    def recording(handler: Handler) -> Handler:
        def translate_op(tr, op: tf.Operation, tensor: tf.Tensor) -> str:
            ran.add(op.type)
            return handler.fn(tr, op, tensor)

        return Handler(translate_op, handler.reads_variables)

    HANDLERS.update({op_type: recording(handler) for op_type, handler in saved.items()})
    try:
        translate(graph, inputs, outputs, "case")
    finally:
        HANDLERS.update(saved)
    return ran


@pytest.mark.unit
def test_every_registered_op_type_has_its_translation():
    fused = {t for f in FUSIONS for t in {f.root} | f.over}
    assert REGISTERED == set(HANDLERS) | fused  # by construction: an op type is registered with its handler
    assert all(callable(h.fn) for h in HANDLERS.values()) and all(callable(f.match) and callable(f.emit)
                                                                   for f in FUSIONS)
    assert set(SUPPORTED) == REGISTERED | FOLDED and not REGISTERED & FOLDED
    with pytest.raises(ValueError, match="Relu is handled by unary already"):
        handles("Relu")(lambda tr, op, tensor: "")


@pytest.mark.tf1
def test_the_cases_use_every_registered_op_type(cases):
    assert sorted(f"{b.name}/{p.name}" for b in cases.iterdir() for p in b.iterdir()) == sorted(CASES)
    exercised = set()
    for case in CASES:
        found = manifest(cases / case)
        graph = load_graph(cases / case / "model.ckpt.meta")
        exercised |= path_op_types(graph, list(found["inputs"].values()), list(found["outputs"].values()))
        exercised |= handled_op_types(graph, found["inputs"], found["outputs"])
    missing = sorted(REGISTERED - exercised)
    assert not missing, f"no case in tests/tf1_builders/auto_ops*.py uses {missing}"


@pytest.mark.tf1
@pytest.mark.parametrize("case", CASES)
def test_each_case_converts_and_matches_the_tf1_ops(cases, tmp_path, case):
    folder = cases / case
    found = manifest(folder)
    spec = ModelSpec.model_validate({
        "name": case.replace("/", "."), "source": {"meta": folder / "model.ckpt.meta", **found}, "architecture": "auto",
        "name_map": {"skip": ["optimizer"]}, "export": {"dir": tmp_path / "export"},
        "verify": {"shards": str(folder / "shards" / "*.npz"), "tolerance": {"atol": 1e-5, "rtol": 1e-5}}})
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    reconstructed = reconstruct(spec, inspected)
    restored = restore_weights(spec, reconstructed, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0
    [shard] = spec.shard_paths()
    record = verify_shard_records(spec, reconstructed, restored, shard, 0)
    assert set(record["outputs"]) == set(found["outputs"])
    failed = {name: out for name, out in record["outputs"].items() if not out["passed"]}
    assert not failed, failed


@pytest.mark.unit
def test_the_readme_table_lists_exactly_the_registered_op_types():
    section = (REPO / "README.md").read_text().split("### `architecture: auto` and `ferry draft-spec`")[1]
    header = "| family | TF1 op types | Keras |"
    assert header in section, f"README: the auto section has no table headed {header!r}"
    lines = section.split(header)[1].strip().splitlines()[1:]  # below the |---| line
    rows = [line.split("|")[1:3] for line in itertools.takewhile(lambda line: line.startswith("|"), lines)]
    listed = {family.strip(): set(re.findall(r"`(\w+)`", types)) for family, types in rows}
    folded = listed.pop("looked through or folded")
    translated = set().union(*listed.values())
    assert not REGISTERED - translated, f"README's auto table lacks {sorted(REGISTERED - translated)}"
    assert not translated - REGISTERED, f"README's auto table lists unregistered {sorted(translated - REGISTERED)}"
    assert folded == FOLDED, (sorted(folded - FOLDED), sorted(FOLDED - folded))


@pytest.mark.unit
def test_a_new_op_is_one_decorated_function():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        tf.identity(tf.math.cumprod(x, axis=1), name="y")
    signature = ({"x": "x:0"}, {"y": "y:0"})
    assert unsupported_ops(graph, *signature) == {}  # no translation: it runs as a raw TF op
    assert translate(graph, *signature, "in memory").fallbacks == {"Cumprod": "Cumprod"}

    @handles("Cumprod")
    def cumprod(tr, op, tensor):
        return tr.add("cumprod", [tr.node(op.inputs[0])], op="cumprod", axis=int(tr.const(op.inputs[1], "axis")))

    try:
        derived = translate(graph, *signature, "in memory")
    finally:
        del HANDLERS["Cumprod"]
    assert derived.nodes == [{"name": "cumprod", "op": "cumprod", "inputs": ["x"], "axis": 1}]
    assert derived.outputs == {"y": "cumprod"} and derived.fallbacks == {}


@pytest.mark.tf1
def test_vision_layers_export_to_keras_and_match_tf1_on_jax(cases, tmp_path):
    """`ferry.TF1Resize` and `ferry.LocalResponseNormalization` are portable: the `.keras` file reloads with
    Keras alone on JAX and matches the TF1 ops at 1e-5."""
    from test_export import LOAD_KERAS, keras_job, reference_npz, run_python

    jobs = []
    for case in ("auto_ops_vision/resize", "auto_ops_vision/lrn", "auto_ops_vision/encoder_decoder"):
        folder, work = cases / case, tmp_path / case.replace("/", ".")
        spec = ModelSpec.model_validate({
            "name": case.replace("/", "."), "source": {"meta": folder / "model.ckpt.meta", **manifest(folder)},
            "architecture": "auto", "name_map": {"skip": ["optimizer"]}, "export": {"dir": work / "export"},
            "verify": {"shards": str(folder / "shards" / "*.npz"), "tolerance": {"atol": 1e-5, "rtol": 1e-5}}})
        inspected = inspect_graph(spec, WorkDir(work))
        info = reconstruct(spec, inspected)
        restored = restore_weights(spec, info, inspected, WorkDir(work))
        record = export_savedmodel(spec, info, restored, spec.shard_paths()[0])["keras"]
        assert record["portable"] and all(out["passed"] for out in record["outputs"].values()), record
        assert set(record["custom_layers"]) & {"ferry.keras3.layers.TF1Resize",
                                               "ferry.keras3.layers.LocalResponseNormalization"}
        jobs.append(keras_job(spec, {"keras": record}, reference_npz(spec, work / "io.npz")))
    loaded = run_python(LOAD_KERAS, json.dumps(jobs), cwd=tmp_path, KERAS_BACKEND="jax")
    assert loaded["backend"] == "jax" and "tensorflow" not in loaded["imported"]
    failed = {job["name"]: out for job in jobs for out in loaded["results"][job["name"]].values() if not out["passed"]}
    assert not failed, loaded["results"]
