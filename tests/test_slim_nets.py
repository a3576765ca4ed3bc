"""zoo/slim_nets.py writes real tf_slim networks as TF1-era graphs with non-trivial batch norm."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import ferry  # noqa: F401  (sets TF env defaults before TensorFlow is imported)

pytestmark = pytest.mark.tf1

SCRIPT = Path(__file__).resolve().parents[1] / "zoo" / "slim_nets.py"
DEFAULT = ("slim_resnet_v1", "slim_resnet_v2", "slim_inception_v1", "slim_alexnet_v2", "slim_inception_v2")
LARGE = ("slim_vgg_a", "slim_overfeat", "slim_vgg_16", "slim_vgg_19", "slim_resnet_v1_50", "slim_inception_v3",
         "slim_resnet_v1_101", "slim_resnet_v2_50", "slim_resnet_v2_101")
INPUT_SIZE = {"slim_resnet_v1": 64, "slim_resnet_v2": 64, "slim_inception_v1": 224,
              "slim_alexnet_v2": 224, "slim_inception_v2": 96}
# Epsilon of every FusedBatchNorm op, as each net's own arg scope sets it (float32 in the attr).
EPSILON = {"slim_resnet_v1": 1e-5, "slim_resnet_v2": 1e-5, "slim_inception_v1": 1e-3, "slim_inception_v2": 1e-3}
NO_GAMMA = ("slim_inception_v1", "slim_inception_v2")  # their arg scopes keep slim.batch_norm's scale=False
# Op types on the paths from `images` to `probs` (dropout with is_training=False is an Identity).
RESNET_OPS = {"Placeholder", "Pad", "Conv2D", "FusedBatchNormV3", "Relu", "MaxPool", "AddV2",
              "Mean", "BiasAdd", "Squeeze", "Softmax"}
PATH_OPS = {
    "slim_resnet_v1": RESNET_OPS,
    "slim_resnet_v2": RESNET_OPS,
    "slim_inception_v1": {"Placeholder", "Conv2D", "FusedBatchNormV3", "Relu", "MaxPool",
                          "ConcatV2", "AvgPool", "Identity", "BiasAdd", "Squeeze", "Softmax"},
    "slim_alexnet_v2": {"Placeholder", "Conv2D", "BiasAdd", "Relu", "MaxPool", "Identity",
                        "Squeeze", "Softmax"},
    # the first conv is separable: depthwise (x5 at a quarter depth) + pointwise with a bias, no BN
    "slim_inception_v2": {"Placeholder", "DepthwiseConv2dNative", "Conv2D", "BiasAdd", "FusedBatchNormV3", "Relu",
                          "MaxPool", "AvgPool", "ConcatV2", "Identity", "Squeeze", "Softmax"},
}
PATH_COUNTS = {  # op type -> how many on the path
    "slim_resnet_v1": {"Conv2D": 15, "FusedBatchNormV3": 14, "AddV2": 4, "Pad": 2, "MaxPool": 2},
    "slim_resnet_v2": {"Conv2D": 15, "FusedBatchNormV3": 13, "AddV2": 4, "Pad": 2, "MaxPool": 2},
    "slim_inception_v1": {"Conv2D": 58, "FusedBatchNormV3": 57, "ConcatV2": 9, "MaxPool": 13},
    "slim_alexnet_v2": {"Conv2D": 8, "MaxPool": 3},
    "slim_inception_v2": {"Conv2D": 70, "DepthwiseConv2dNative": 1, "FusedBatchNormV3": 68, "ConcatV2": 10,
                          "AvgPool": 8, "MaxPool": 5},
}
# Checkpoint keys each net must have (besides global_step): slim's own naming.
KEYS = {
    "slim_resnet_v1": {
        "resnet_v1/conv1/weights": [7, 7, 3, 64],
        "resnet_v1/conv1/BatchNorm/gamma": [64],
        "resnet_v1/block1/unit_2/bottleneck_v1/conv2/BatchNorm/moving_variance": [16],
        "resnet_v1/block2/unit_1/bottleneck_v1/shortcut/weights": [1, 1, 64, 128],
        "resnet_v1/block2/unit_1/bottleneck_v1/shortcut/BatchNorm/beta": [128],
        "resnet_v1/logits/weights": [1, 1, 128, 10],
        "resnet_v1/logits/biases": [10],
    },
    "slim_resnet_v2": {
        "resnet_v2/conv1/weights": [7, 7, 3, 64],
        "resnet_v2/conv1/biases": [64],  # v2's root conv has no BN: the first unit's preact does it
        "resnet_v2/block1/unit_1/bottleneck_v2/preact/gamma": [64],
        "resnet_v2/block1/unit_1/bottleneck_v2/conv3/biases": [64],
        "resnet_v2/block2/unit_1/bottleneck_v2/shortcut/biases": [128],
        "resnet_v2/postnorm/moving_mean": [128],
        "resnet_v2/logits/weights": [1, 1, 128, 10],
    },
    "slim_inception_v1": {
        "InceptionV1/Conv2d_1a_7x7/weights": [7, 7, 3, 64],
        "InceptionV1/Conv2d_1a_7x7/BatchNorm/beta": [64],
        "InceptionV1/Mixed_3b/Branch_1/Conv2d_0b_3x3/weights": [3, 3, 96, 128],
        "InceptionV1/Mixed_5c/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_mean": [128],
        "InceptionV1/Logits/Conv2d_0c_1x1/weights": [1, 1, 1024, 10],
    },
    "slim_inception_v2": {
        "InceptionV2/Conv2d_1a_7x7/depthwise_weights": [7, 7, 3, 5],
        "InceptionV2/Conv2d_1a_7x7/pointwise_weights": [1, 1, 15, 16],
        "InceptionV2/Conv2d_1a_7x7/biases": [16],
        "InceptionV2/Mixed_5c/Branch_1/Conv2d_0a_1x1/BatchNorm/moving_mean": [48],
        "InceptionV2/Logits/Conv2d_1c_1x1/weights": [1, 1, 256, 10],
    },
    "slim_alexnet_v2": {
        "alexnet_v2/conv1/weights": [11, 11, 3, 64],
        "alexnet_v2/fc6/weights": [5, 5, 256, 4096],
        "alexnet_v2/fc7/weights": [1, 1, 4096, 4096],
        "alexnet_v2/fc8/weights": [1, 1, 4096, 10],
        "alexnet_v2/fc8/biases": [10],
    },
}


def run_script(*args: str) -> subprocess.CompletedProcess:
    """Run zoo/slim_nets.py in its own process (tf_keras + TF1 behaviour stay out of this one)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                           text=True)


def run_python(code: str) -> dict:
    """Run `code` (which imports zoo/slim_nets.py as `slim_nets`) in its own process; its JSON."""
    prelude = f"import json, sys\nsys.path.insert(0, {str(SCRIPT.parent)!r})\nimport slim_nets\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root`: modification time (ns) and content hash."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


# slim_zoo: tests/conftest.py (a session fixture: tests/test_auto.py converts the same nets)


def load_graph(folder: Path) -> tf.Graph:
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.import_meta_graph(str(folder / "model.ckpt.meta"))
    return graph


def path_ops(graph: tf.Graph, source: str, target: str) -> list[tf.Operation]:
    """Ops that depend on `source` and that `target` depends on (both ends included)."""
    up, stack = set(), [graph.get_tensor_by_name(target).op]
    while stack:
        op = stack.pop()
        if op not in up:
            up.add(op)
            stack.extend(t.op for t in op.inputs)
    down, stack = set(), [graph.get_tensor_by_name(source).op]
    while stack:
        op = stack.pop()
        if op not in down:
            down.add(op)
            stack.extend(c for t in op.outputs for c in t.consumers())
    return [op for op in graph.get_operations() if op in up and op in down]


def test_default_build_is_the_non_large_nets(slim_zoo):
    assert sorted(p.name for p in slim_zoo.iterdir()) == sorted(DEFAULT)  # no temp leftovers
    for name in DEFAULT:
        manifest = json.loads((slim_zoo / name / "manifest.json").read_text())
        assert manifest == {"name": name, "inputs": {"images": "images:0"},
                            "outputs": {"probs": "probs:0"}, "tf_version": tf.__version__,
                            "input_size": INPUT_SIZE[name]}
        assert not (slim_zoo / name / "checkpoint").exists()  # no state file with a temp path
        assert (slim_zoo / name / "model.ckpt.data-00000-of-00001").exists()


def test_large_nets_are_opt_in_and_the_shims_are_reported():
    info = run_python("large = {n: m.large for n, m in slim_nets.MODELS.items()}\n"
                      "print(json.dumps({'large': large, 'default': slim_nets.DEFAULT,"
                      " 'shims': slim_nets.SHIMS}))")
    assert info["default"] == list(DEFAULT)
    assert info["large"] == {**{n: False for n in DEFAULT}, **{n: True for n in LARGE}}
    # tf_keras 2.21 lacks the module TF 2.21 loads slim.batch_norm's layer from; TF 2.21 lacks
    # ops.Tensor, which tf_slim's constant_value checks against.
    assert any("tf_keras.legacy_tf_layers.normalization" in s for s in info["shims"])
    assert "tensorflow.python.framework.ops.Tensor = tf.Tensor" in info["shims"]


def test_ops_tensor_shim_lets_in_place_batch_norm_updates_build():
    """updates_collections=None takes slim's own _fused_batch_norm path (smart_cond ->
    constant_value -> ops.Tensor): without the second shim it raises AttributeError."""
    info = run_python(
        "tf, slim = slim_nets.tf, slim_nets.slim\n"
        "g = tf.Graph()\n"
        "with g.as_default():\n"
        "    x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3])\n"
        "    slim.batch_norm(x, is_training=False, updates_collections=None, scale=True)\n"
        "print(json.dumps(sorted({op.type for op in g.get_operations()})))\n")
    assert "FusedBatchNormV3" in info and "VariableV2" in info


def test_unknown_name_is_refused_listing_the_known_ones(tmp_path):
    done = run_script("--out", str(tmp_path), "--only", "slim_resnet_v3")
    assert done.returncode == 2
    assert "slim_resnet_v3" in done.stderr and "slim_vgg_a" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", DEFAULT)
def test_graph_is_tf1_era_with_the_nets_own_ops(slim_zoo, name):
    graph = load_graph(slim_zoo / name)
    types = {op.type for op in graph.get_operations()}
    assert "VariableV2" in types
    assert not types & {"VarHandleOp", "ReadVariableOp", "AssignVariableOp", "While", "If"}
    ops = path_ops(graph, "images:0", "probs:0")
    counts = Counter(op.type for op in ops)
    assert set(counts) == PATH_OPS[name]
    assert {k: counts[k] for k in PATH_COUNTS[name]} == PATH_COUNTS[name]
    if name.startswith("slim_resnet"):
        # resnet_utils.conv2d_same with stride 2: explicit Pad, then a VALID conv
        pads = sorted(tf.make_ndarray(op.inputs[1].op.get_attr("value")).tolist()
                      for op in ops if op.type == "Pad")
        assert pads == [[[0, 0], [1, 1], [1, 1], [0, 0]], [[0, 0], [3, 3], [3, 3], [0, 0]]]
        for op in ops:
            if op.type == "Pad":
                (conv,) = op.outputs[0].consumers()
                assert conv.type == "Conv2D" and conv.get_attr("padding") == b"VALID"
                assert conv.get_attr("strides") == [1, 2, 2, 1]
        # a stride-2 identity shortcut is a 1x1 max pool (resnet_utils.subsample)
        assert any(op.type == "MaxPool" and op.get_attr("ksize") == [1, 1, 1, 1] for op in ops)


@pytest.mark.parametrize("name", DEFAULT)
def test_batch_norm_ops_carry_the_arg_scope_epsilon(slim_zoo, name):
    graph = load_graph(slim_zoo / name)
    bn = [op for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")]
    if name not in EPSILON:  # alexnet_v2_arg_scope has no batch norm
        assert bn == []
        return
    assert bn and {op.type for op in bn} == {"FusedBatchNormV3"}
    epsilons = {op.get_attr("epsilon") for op in bn}  # float32 attr: 1e-5 reads 9.99999975e-06
    assert len(epsilons) == 1 and epsilons.pop() == pytest.approx(EPSILON[name], rel=1e-6)
    assert not any(op.get_attr("is_training") for op in bn)  # moving statistics at inference
    assert {op.get_attr("data_format") for op in bn} == {b"NHWC"}
    # inception_v1_arg_scope keeps slim.batch_norm's scale=False: no gamma, a constant 1 instead
    scale_types = {op.inputs[1].op.type for op in bn}
    assert scale_types == ({"Const"} if name in NO_GAMMA else {"Identity"})


@pytest.mark.parametrize("name", DEFAULT)
def test_checkpoint_keys_and_non_trivial_batch_norm(slim_zoo, name):
    reader = tf.train.load_checkpoint(str(slim_zoo / name / "model.ckpt"))
    shapes = reader.get_variable_to_shape_map()
    assert "global_step" in shapes
    assert {k: shapes.get(k) for k in KEYS[name]} == KEYS[name]
    by_kind = {kind: [k for k in shapes if k.endswith("/" + kind)]
               for kind in ("moving_mean", "moving_variance", "gamma", "beta")}
    if name == "slim_alexnet_v2":
        assert not any(by_kind.values())
        return
    assert len(by_kind["moving_mean"]) == len(by_kind["moving_variance"]) == len(by_kind["beta"])
    assert len(by_kind["gamma"]) == (0 if name in NO_GAMMA else len(by_kind["beta"]))
    for key in by_kind["moving_mean"]:
        assert np.abs(reader.get_tensor(key)).max() > 1e-3, key
    for key in by_kind["moving_variance"]:
        value = reader.get_tensor(key)
        assert value.min() > 0 and np.abs(value - 1.0).max() > 1e-2, key
    for key in by_kind["gamma"]:
        assert np.abs(reader.get_tensor(key) - 1.0).max() > 1e-2, key
    for key in by_kind["beta"]:
        assert np.abs(reader.get_tensor(key)).max() > 1e-2, key


@pytest.mark.parametrize("name", DEFAULT)
def test_shards_hold_images_in_unit_range(slim_zoo, name):
    size = INPUT_SIZE[name]
    shards = sorted((slim_zoo / name / "shards").iterdir())
    assert [p.name for p in shards] == [f"shard-{i:03d}.npz" for i in range(3)]
    for path in shards:
        with np.load(path) as data:
            assert list(data) == ["images"]
            images = data["images"]
        assert images.shape == (4, size, size, 3) and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() < 1.0


@pytest.mark.parametrize("name", DEFAULT)
def test_graph_restores_and_gives_informative_probs(slim_zoo, name):
    folder = slim_zoo / name
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        saver = tf.compat.v1.train.import_meta_graph(str(folder / "model.ckpt.meta"))
        saver.restore(sess, str(folder / "model.ckpt"))
        for shard in sorted((folder / "shards").iterdir()):
            with np.load(shard) as data:
                probs = sess.run("probs:0", {"images:0": data["images"]})
            assert probs.shape == (4, 10)
            assert np.all(np.isfinite(probs))
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
            # neither saturated nor the same for every image: parity on probs means something
            assert probs.max() < 0.999 and probs.std(axis=0).max() > 1e-3


def test_second_run_without_force_leaves_files_untouched(slim_zoo):
    before = fingerprint(slim_zoo)
    done = run_script("--out", str(slim_zoo))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("skipped (already built") == len(DEFAULT)
    assert fingerprint(slim_zoo) == before
