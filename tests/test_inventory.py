"""Tests for ferry.tf1.inventory on real TF1 graphs, built in a separate process (tf_keras layers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TF1_BUILDERS, run_tf1_script

from ferry.tf1.inventory import build_inventory
from ferry.tf1.inventory_text import format_inventory

pytestmark = pytest.mark.tf1

# The fixture graphs, written by tests/tf1_builders/inventory_graphs.py as `<root>/<name>/model.ckpt(.meta)`.
MODELS = ("mlp", "cnn", "mlp_resource", "tutorial")


@pytest.fixture(scope="module")
def metas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the fixture graphs once, in a separate process (tf_keras needs its own env)."""
    root = tmp_path_factory.mktemp("inventory_graphs")
    run_tf1_script(TF1_BUILDERS / "inventory_graphs.py", root)
    paths = {name: root / name / "model.ckpt.meta" for name in MODELS}
    assert all(p.is_file() for p in paths.values()), list(root.rglob("*"))
    return paths


@pytest.fixture(scope="module")
def inv(metas: dict[str, Path]) -> dict[str, dict]:
    """Inventories of the fixture graphs, by model name."""
    return {name: build_inventory(path) for name, path in metas.items()}


def by_name(items: list[dict]) -> dict[str, dict]:
    """Index inventory items by their `name`."""
    return {item["name"]: item for item in items}


def op_names(inventory: dict) -> set[str]:
    """Names of the inference ops."""
    return {op["name"] for op in inventory["ops"]}


# ------------------------------------------------------------------------------------ inputs


def test_placeholders_are_the_model_inputs_with_shapes(inv):
    assert inv["mlp"]["placeholders"] == [
        {"name": "x", "tensor": "x:0", "dtype": "float32", "shape": [None, 784],
         "has_default": False}
    ]
    assert [(p["name"], p["shape"]) for p in inv["cnn"]["placeholders"]] == [
        ("images", [None, 28, 28, 1])
    ]
    assert [p["name"] for p in inv["mlp_resource"]["placeholders"]] == ["x"]


def test_labels_and_switches_are_training_only(inv):
    assert inv["mlp"]["training_only"]["labels"] == ["y"]
    assert inv["cnn"]["training_only"]["labels"] == ["labels"]
    assert inv["cnn"]["training_only"]["is_training"] == ["is_training"]
    tutorial = inv["tutorial"]["training_only"]
    assert tutorial["labels"] == ["y_"]
    assert tutorial["is_training"] == ["keep_prob"]  # it only feeds dropout (via 1 - keep_prob)
    assert [p["name"] for p in inv["tutorial"]["placeholders"]] == ["x"]


# ----------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("model", ["mlp", "cnn", "mlp_resource"])
def test_candidate_outputs_are_the_softmax(inv, model):
    inputs = {"mlp": ["x"], "cnn": ["images"], "mlp_resource": ["x"]}[model]
    assert inv[model]["outputs"] == [
        {"name": "probs", "tensor": "probs:0", "op": "Softmax", "dtype": "float32",
         "shape": [None, 10], "depends_on": inputs}
    ]


def test_candidate_outputs_exclude_loss_and_training_ops(inv):
    # A loss that nothing reads (cnn), or one only a summary reads (mlp), is no candidate.
    for model in MODELS:
        for output in inv[model]["outputs"]:
            assert "loss" not in output["name"] and "gradients" not in output["name"]
    # Tutorial style: probs is read only by log(probs) in the loss, so the candidates are the
    # ops just before the labels join in; none depends on the labels or keep_prob.
    tutorial = inv["tutorial"]["outputs"]
    assert tutorial and all(o["depends_on"] == ["x"] for o in tutorial)
    assert {o["op"] for o in tutorial} <= {"Softmax", "Log", "ArgMax"}


# --------------------------------------------------------------------------------- variables


def test_variables_reference_kind_shapes_and_readers(inv):
    variables = by_name(inv["mlp"]["variables"])
    kernel = variables["dense/kernel"]
    assert kernel == {"name": "dense/kernel", "shape": [784, 64], "dtype": "float32",
                      "kind": "reference", "trainable": True, "training_only": False,
                      "read_by": ["dense/MatMul"]}
    assert variables["dense/bias"]["read_by"] == ["dense/BiasAdd"]
    assert variables["dense_1/kernel"]["shape"] == [64, 10]
    assert {v["kind"] for v in inv["mlp"]["variables"]} == {"reference"}


def test_variables_resource_kind_read_through_read_variable_op(inv):
    variables = by_name(inv["mlp_resource"]["variables"])
    assert {v["kind"] for v in variables.values()} == {"resource"}
    assert variables["dense/kernel"]["read_by"] == ["dense/MatMul"]
    assert variables["dense/kernel"]["shape"] == [784, 64]
    assert variables["dense_1/bias"]["read_by"] == ["dense_1/BiasAdd"]
    types = {op["name"]: op["type"] for op in inv["mlp_resource"]["ops"]}
    assert types["dense/kernel"] == "VarHandleOp"
    assert "ReadVariableOp" in inv["mlp_resource"]["op_types"]


@pytest.mark.parametrize("model", ["mlp", "mlp_resource"])
def test_optimizer_slots_and_global_step_are_training_only(inv, model):
    variables = by_name(inv[model]["variables"])
    for name in ("dense/kernel/Adam", "dense/kernel/Adam_1", "dense_1/bias/Adam_1",
                 "beta1_power", "beta2_power", "global_step"):
        assert variables[name]["training_only"], name
        assert not variables[name]["trainable"], name
    inference = [v["name"] for v in variables.values() if not v["training_only"]]
    assert inference == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    parts = inv[model]["training_only"]
    assert {"dense/kernel/Adam", "dense/kernel/Adam_1", "beta1_power", "Adam"} <= set(
        parts["optimizer"]
    )
    assert parts["global_step"] == ["global_step"]
    assert parts["summaries"] == ["loss", "Merge/MergeSummary"]
    assert parts["gradients"] > 0 and parts["save_restore"] > 0 and parts["initializers"] > 0


def test_batch_norm_variables_are_read_by_both_fused_batch_norms(inv):
    variables = by_name(inv["cnn"]["variables"])
    for name in ("bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"):
        assert variables[name]["read_by"] == [
            "bn/cond/FusedBatchNormV3", "bn/cond/FusedBatchNormV3_1"
        ], name
        assert not variables[name]["training_only"]
    assert not variables["bn/moving_mean"]["trainable"]
    assert variables["conv2d/kernel"]["shape"] == [3, 3, 1, 8]
    assert variables["conv2d/kernel"]["read_by"] == ["conv2d/Conv2D"]
    assert variables["conv2d/kernel/Momentum"]["training_only"]


# --------------------------------------------------------------------------------------- ops


def test_conv_attrs(inv):
    conv = by_name(inv["cnn"]["ops"])["conv2d/Conv2D"]
    assert conv["type"] == "Conv2D"
    assert conv["inputs"] == ["images", "conv2d/kernel/read"]
    assert conv["attrs"]["padding"] == "SAME"
    assert conv["attrs"]["strides"] == [1, 2, 2, 1]
    assert conv["attrs"]["data_format"] == "NHWC"
    assert conv["attrs"]["dilations"] == [1, 1, 1, 1]
    assert conv["attrs"]["T"] == "float32"


def test_fused_batch_norm_epsilon_and_modes(inv):
    norms = [op for op in inv["cnn"]["ops"] if op["type"].startswith("FusedBatchNorm")]
    # tf.layers.batch_normalization(training=<placeholder>) builds a v1 cond with one fused op
    # per branch: batch statistics (is_training=True) and moving averages (is_training=False).
    assert {op["attrs"]["is_training"] for op in norms} == {True, False}
    assert all(op["attrs"]["epsilon"] == 0.001 for op in norms)  # float32 attr, shortest form
    assert inv["cnn"]["op_types"]["FusedBatchNormV3"] == 2


def test_matmul_attrs_and_inputs(inv):
    matmul = by_name(inv["mlp"]["ops"])["dense/MatMul"]
    assert matmul["inputs"] == ["x", "dense/kernel/read"]
    assert matmul["attrs"] == {"T": "float32", "transpose_a": False, "transpose_b": False}


def test_dropout_and_updates_are_listed_not_inference_ops(inv):
    cnn = inv["cnn"]
    assert cnn["training_only"]["dropout"] == ["dropout"]
    assert cnn["training_only"]["updates"] == ["bn/AssignMovingAvg", "bn/AssignMovingAvg_1"]
    assert not any(name.startswith(("dropout/", "bn/AssignMovingAvg")) for name in op_names(cnn))
    # Dropout is skipped, yet the layer after it still reads its (inference: identity) output.
    assert by_name(cnn["ops"])["dense/MatMul"]["inputs"][0] == "dropout/cond/Merge"


@pytest.mark.parametrize("model", MODELS)
def test_inference_ops_hold_no_training_parts(inv, model):
    # tf.losses leaves a few constants that nothing uses (no inputs either): dead, not training.
    used = {i.split(":")[0] for op in inv[model]["ops"] for i in op["inputs"]}
    names = {op["name"] for op in inv[model]["ops"] if op["type"] != "Const" or op["name"] in used}
    prefixes = ("gradients/", "save/", "Adam/", "Momentum/", "train/", "global_step",
                "beta1_power", "sparse_softmax_cross_entropy_loss/", "init")
    assert not [n for n in names if n.startswith(prefixes) or "/Adam" in n or "Initializer" in n]
    assert not [op for op in inv[model]["ops"] if "Summary" in op["type"]
                or op["type"].startswith(("Apply", "ResourceApply", "Assign", "Save", "Restore"))]
    assert sum(inv[model]["op_types"].values()) == len(inv[model]["ops"])


def test_op_types_count_inference_ops(inv):
    assert inv["mlp"]["op_types"] == {
        "Identity": 4, "VariableV2": 4, "Const": 3, "BiasAdd": 2, "MatMul": 2,
        "Placeholder": 1, "Relu": 1, "Softmax": 1,
    }


# ------------------------------------------------------------------------------ format, json


@pytest.mark.parametrize("model", MODELS)
def test_inventory_is_json_serialisable(inv, metas, model):
    assert json.loads(json.dumps(inv[model])) == inv[model]
    assert inv[model]["meta"] == str(metas[model])


def test_format_inventory_mentions_inputs_outputs_variables(inv):
    text = format_inventory(inv["mlp"])
    for expected in ("Inputs (1)", "x:0", "[?, 784]", "Candidate outputs (1)", "probs:0",
                     "Softmax", "Variables (4 used by inference, 11 training-only)",
                     "dense/kernel", "[784, 64]", "reference", "dense/MatMul",
                     "Op types", "MatMul 2", "Training-only parts", "global_step",
                     "dense/kernel/Adam", "labels:", "gradients:"):
        assert expected in text, expected
    for model in MODELS:
        assert max(len(line) for line in format_inventory(inv[model]).splitlines()) <= 100


def test_format_inventory_cnn_shows_switches(inv):
    text = format_inventory(inv["cnn"])
    assert "images:0" in text and "[?, 28, 28, 1]" in text
    assert "bn/cond/FusedBatchNormV3 (+1)" in text
    assert "is_training:" in text and "dropout:" in text


# ------------------------------------------------------------------------------------ errors


def test_missing_meta_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "model.ckpt.meta"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_inventory(missing)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00 not a graph", b"hello: world\n"])
def test_not_a_meta_graph_names_the_path(tmp_path, content):
    bogus = tmp_path / "bogus.meta"
    bogus.write_bytes(content)
    with pytest.raises(ValueError, match="bogus.meta"):
        build_inventory(bogus)


def test_import_leaves_the_default_context_alone(metas):
    import tensorflow as tf

    build_inventory(metas["mlp"])
    assert tf.executing_eagerly()
    assert not tf.compat.v1.get_default_graph().get_operations()


@pytest.mark.parametrize(("model", "inputs", "outputs"), [
    ("linear", ["x"], ["y"]),  # output is an Identity the MSE loss reads: still the model's output
    ("mlp", ["x"], ["probs"]),
    ("mnist_cnn", ["images"], ["probs"]),
])
def test_example_zoo_inputs_and_outputs(zoo, model, inputs, outputs):
    inv = build_inventory(zoo / model / "model.ckpt.meta")
    assert [p["name"] for p in inv["placeholders"]] == inputs
    assert [o["name"] for o in inv["outputs"]] == outputs
    weights = [v for v in inv["variables"] if not v["training_only"]]
    assert weights and all(v["read_by"] for v in weights)
    assert all(v["name"].endswith(("/kernel", "/bias")) for v in weights)


def test_inspect_command_prints_the_inventory(zoo, capsys):
    from ferry.cli import main

    assert main(["inspect", str(zoo / "mnist_cnn" / "model.ckpt.meta")]) == 0
    out = capsys.readouterr().out
    assert "images" in out and "probs" in out and "conv2d_1/kernel" in out
    assert main(["inspect", str(zoo / "nope.meta")]) == 2
    assert "nope.meta" in capsys.readouterr().err
