"""What `auto` makes of the array and math ops beyond the layers, checked on the nodes it derives (the numbers
are checked against TF1 by tests/test_auto_ops.py): fusions match strictly, shape arithmetic becomes static
shapes, an einsum with a variable kernel becomes one EinsumDense bound through `reshape`; and all of it stays
portable Keras (the cases' `.keras` files on JAX)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import TF1_BUILDERS, run_tf1_script

from ferry.spec import ModelSpec
from ferry.tf1.auto import Translation, translate

v1 = tf.compat.v1


def case_spec(folder: Path, work: Path) -> ModelSpec:
    """`architecture: auto` on a builder's model folder (its manifest's inputs and outputs), verified at 1e-5."""
    found = json.loads((folder / "manifest.json").read_text())
    return ModelSpec.model_validate({
        "name": folder.name, "source": {"meta": folder / "model.ckpt.meta", "inputs": found["inputs"],
                                        "outputs": found["outputs"]},
        "architecture": "auto", "name_map": {"skip": ["optimizer"]}, "export": {"dir": work / "export"},
        "verify": {"shards": str(folder / "shards" / "*.npz"), "tolerance": {"atol": 1e-5, "rtol": 1e-5}}})


def derive(build: Callable[[tf.Tensor], dict[str, tf.Tensor]], shape: list[int | None]) -> Translation:
    """The translation of the outputs `build` makes from a float placeholder `x` of `shape`."""
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape, name="x")
        outputs = {name: tf.identity(t, name=f"out_{name}").name for name, t in build(x).items()}
    return translate(graph, {"x": "x:0"}, outputs, "in memory")


def ops_of(derived: Translation) -> list[str]:
    return [node.get("op") or node["class"] for node in derived.nodes]


def gelu_tanh(x: tf.Tensor, coefficient: float = 0.044715, scale: float = math.sqrt(2 / math.pi)) -> tf.Tensor:
    return 0.5 * x * (1.0 + tf.tanh(scale * (x + coefficient * tf.pow(x, 3))))


@pytest.mark.unit
def test_gelu_and_l2_normalize_written_op_by_op_are_one_node_each():
    derived = derive(lambda x: {"tanh": gelu_tanh(x), "erf": x * 0.5 * (1.0 + tf.math.erf(x / math.sqrt(2.0))),
                                "l2": tf.nn.l2_normalize(x, axis=-1, epsilon=1e-6)}, [None, 4])
    assert [(n["op"], n["inputs"]) for n in derived.nodes] == [("gelu", ["x"]), ("gelu", ["x"]), ("normalize", ["x"])]
    assert [n.get("approximate") for n in derived.nodes[:2]] == [True, False]
    assert derived.nodes[2]["epsilon"] == pytest.approx(1e-3)  # keras clips 1/norm at 1/eps: sqrt of TF's eps


@pytest.mark.unit
@pytest.mark.parametrize("near_miss", [
    lambda x: gelu_tanh(x, scale=0.79),  # not sqrt(2/pi): another function
    lambda x: gelu_tanh(x, coefficient=0.04),
    lambda x: 0.5 * x * (1.0 + tf.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * tf.pow(x * 2.0, 3)))),  # 2x cubed
    lambda x: 0.6 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0))),
    lambda x: 0.5 * x * x * (1.0 + tf.math.erf(x / math.sqrt(2.0))),
    lambda x: 0.5 * x * (1.0 + tf.math.erf(x / 2.0)),
    lambda x: x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x), -1, keepdims=True), tf.abs(x))),
    lambda x: x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x * 2.0), -1, keepdims=True), 1e-12)),
], ids=["tanh_scale", "tanh_cubic", "cube_of_another", "erf_half", "erf_x_squared", "erf_divisor", "l2_tensor_eps",
        "l2_of_another"])
def test_near_misses_stay_op_by_op(near_miss):
    assert not {"gelu", "normalize"} & set(ops_of(derive(lambda x: {"y": near_miss(x)}, [None, 4])))


@pytest.mark.unit
def test_shapes_computed_with_tf_shape_become_static_shapes_with_one_free_dim():
    def build(x: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = tf.shape(x)[0]
        return {"packed": tf.reshape(x, tf.stack([batch, 15])), "flatten": tf.reshape(x, [batch, -1]),
                "per_head": tf.reshape(x, tf.stack([batch, 5, 3, 1])), "ones": tf.ones(tf.stack([batch, 5, 1]))}

    derived = derive(build, [None, 5, 3])
    shapes = {n["name"]: n["newshape"] for n in derived.nodes if n.get("op") == "reshape" and n["inputs"] == ["x"]}
    assert sorted(shapes.values()) == [[-1, 5, 3, 1], [-1, 15], [-1, 15]]
    ones = next(n for n in derived.nodes if n["name"] == derived.outputs["ones"])
    assert ones["op"] == "add"  # a [1, 5, 1] tile of ones plus zeros of the batch's length, computed from x
    assert "tile" in ops_of(derived) and "Shape" not in str(derived.nodes)


@pytest.mark.unit
def test_an_einsum_with_a_reshaped_kernel_and_bias_is_one_einsum_dense():
    def build(x: tf.Tensor) -> dict[str, tf.Tensor]:
        with v1.variable_scope("query"):
            kernel = v1.get_variable("kernel", [6, 8])
            bias = v1.get_variable("bias", [8])
        return {"y": tf.einsum("abc,cde->abde", x, tf.reshape(kernel, [6, 2, 4])) + tf.reshape(bias, [2, 4])}

    derived = derive(build, [None, 5, 6])
    assert derived.nodes == [{"name": "query", "class": "EinsumDense", "inputs": ["x"], "equation": "abc,cde->abde",
                              "output_shape": [5, 2, 4], "bias_axes": "de"}]
    assert derived.rules == [
        {"from": "query/kernel", "to": "query/kernel", "match": "exact", "transform": "reshape"},
        {"from": "query/bias", "to": "query/bias", "match": "exact", "transform": "reshape"}]


@pytest.mark.unit
def test_array_constants_are_nodes_computed_from_an_input():
    derived = derive(lambda x: {"y": x + tf.constant([1.0, 2.0, 3.0])}, [None, 3])
    constant = next(n for n in derived.nodes if n.get("class") == "Rescaling")
    assert (constant["scale"], constant["offset"]) == (0.0, [1.0, 2.0, 3.0])
    assert [n["inputs"] for n in derived.nodes][:3] == [["x"], ["x.zero.like"], ["x.zero"]]  # zeros from input x


@pytest.mark.tf1
def test_the_array_cases_keras_files_load_on_jax_and_match_tf1(tmp_path):
    """Every op tests/tf1_builders/auto_ops_array.py uses is translated into portable Keras: each case's exported
    `.keras` reloads on JAX and matches the TF1 graph at 1e-5."""
    from test_export import LOAD_KERAS, export, keras_job, reference_npz, run_python

    run_tf1_script(TF1_BUILDERS / "auto_ops_array.py", tmp_path / "cases")
    jobs = []
    for folder in sorted((tmp_path / "cases").iterdir()):
        spec = case_spec(folder, tmp_path / folder.name)
        exported = export(spec, tmp_path / folder.name / "work")
        assert exported["keras"]["portable"], exported["keras"]
        jobs.append(keras_job(spec, exported, reference_npz(spec, tmp_path / f"{folder.name}.npz")))
    loaded = run_python(LOAD_KERAS, json.dumps(jobs), cwd=tmp_path, KERAS_BACKEND="jax")
    assert loaded["backend"] == "jax"
    failed = {job["name"]: out for job in jobs for out in loaded["results"][job["name"]].values() if not out["passed"]}
    assert not failed, loaded["results"]
