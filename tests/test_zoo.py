"""zoo/build.py writes real TF1-era models: reference variables, optimizer state, shards."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import ferry  # noqa: F401  (sets TF env defaults before TensorFlow is imported)

pytestmark = pytest.mark.tf1

BUILD = Path(__file__).resolve().parents[1] / "zoo" / "build.py"
MODELS = ("linear", "mlp", "mnist_cnn", "resnet_bn", "text_lstm", "gru_seq", "transformer")  # .meta + checkpoint
# The other formats a fleet holds, each written by its own TF1 API: a frozen GraphDef, a TF1 SavedModel
# (simple_save), an Estimator model_dir (graph.pbtxt, a Saver with global_step, the `checkpoint` state file).
FORMAT_FILES = {
    "frozen_cnn": ["frozen.pb"],
    "savedmodel_mlp": ["savedmodel/saved_model.pb", "savedmodel/variables/variables.data-00000-of-00001",
                       "savedmodel/variables/variables.index"],
    "estimator_dnn": ["model_dir/checkpoint", "model_dir/graph.pbtxt",
                      *[f"model_dir/model.ckpt-{n}.{ext}" for n in (10, 5)
                        for ext in ("data-00000-of-00001", "index", "meta")]],
    "example_dnn": ["savedmodel/saved_model.pb", "savedmodel/variables/variables.data-00000-of-00001",
                    "savedmodel/variables/variables.index"],
}
SHARDS = [f"shards/shard-{i:03d}.npz" for i in range(4)]
# example_dnn takes serialized tf.Examples: its shards are TFRecord files of them, the last GZIP-compressed.
RECORD_SHARDS = {"example_dnn": [*[f"shards/shard-{i:03d}.tfrecord" for i in range(3)], "shards/shard-003.tfrecord.gz"]}
NEW_MODELS = ("resnet_bn", "text_lstm", "gru_seq", "transformer")
# Verification data in other formats than the shards (zoo/build.py EXTRA_DATA), written by TF's and numpy's own APIs.
EXTRA_FILES = {"text_lstm": ["tfrecords/tokens.tfrecord"],
               "mnist_cnn": ["foreign/batch-000.npz", "foreign/batch-001.npz"]}
TRAIN_STEPS = {name: 5 for name in MODELS} | {"linear": 20, "mlp": 10}
MOMENTUM = ("linear", "gru_seq")  # the others train with Adam


def _bn(scope: str, channels: int, scale: bool = True) -> dict[str, list[int]]:
    keys = ["beta", "moving_mean", "moving_variance", *(["gamma"] if scale else [])]
    return {f"{scope}/{k}": [channels] for k in keys}


def _dense(scope: str, n_in: int, n_out: int) -> dict[str, list[int]]:
    return {f"{scope}/kernel": [n_in, n_out], f"{scope}/bias": [n_out]}


def _layer_norm(scope: str) -> dict[str, list[int]]:
    return {f"{scope}/gamma": [32], f"{scope}/beta": [32]}


# Checkpoint weights (optimizer state excluded) and their shapes; all of them float32.
WEIGHTS = {
    "linear": {"dense/kernel": [1, 1], "dense/bias": [1]},
    "mlp": {
        "dense/kernel": [784, 64], "dense/bias": [64],
        "dense_1/kernel": [64, 128], "dense_1/bias": [128],
        "dense_2/kernel": [128, 10], "dense_2/bias": [10],
    },
    "mnist_cnn": {
        "conv2d/kernel": [3, 3, 1, 32], "conv2d/bias": [32],
        "conv2d_1/kernel": [3, 3, 32, 64], "conv2d_1/bias": [64],
        "dense/kernel": [1600, 10], "dense/bias": [10],
    },
    "resnet_bn": {
        "stem/conv/kernel": [3, 3, 3, 16], **_bn("stem/bn", 16),
        "block1/conv1/kernel": [3, 3, 16, 16], **_bn("block1/bn1", 16),
        "block1/conv2/kernel": [3, 3, 16, 16], **_bn("block1/bn2", 16),
        "block2/conv1/kernel": [3, 3, 16, 32], **_bn("block2/bn1", 32),
        "block2/conv2/kernel": [3, 3, 32, 32], **_bn("block2/bn2", 32, scale=False),
        "block2/shortcut/kernel": [1, 1, 16, 32], "block2/shortcut/bias": [32],
        **_dense("logits", 32, 10),
    },
    "text_lstm": {
        "embedding": [100, 16],
        "rnn/lstm_cell/kernel": [16 + 32, 4 * 32], "rnn/lstm_cell/bias": [4 * 32],
        **_dense("logits", 32, 2),
    },
    "gru_seq": {
        "rnn/gru_cell/gates/kernel": [8 + 16, 2 * 16], "rnn/gru_cell/gates/bias": [2 * 16],
        "rnn/gru_cell/candidate/kernel": [8 + 16, 16], "rnn/gru_cell/candidate/bias": [16],
        **_dense("head", 16, 4),
    },
    "transformer": {
        "embeddings/word": [50, 32], "embeddings/position": [16, 32],
        **_dense("encoder/layer_0/attention/query", 32, 32),
        **_dense("encoder/layer_0/attention/key", 32, 32),
        **_dense("encoder/layer_0/attention/value", 32, 32),
        **_dense("encoder/layer_0/attention/output", 32, 32),
        **_layer_norm("encoder/layer_0/attention/layer_norm"),
        **_dense("encoder/layer_0/ffn/intermediate", 32, 64),
        **_dense("encoder/layer_0/ffn/output", 64, 32),
        **_layer_norm("encoder/layer_0/ffn/layer_norm"),
        **_dense("classifier", 32, 3),
    },
}
# Saved but not trained by the optimizer: no slots.
NON_TRAINABLE = {name: {k for k in w if "/moving_" in k} for name, w in WEIGHTS.items()}
# Shard arrays: placeholder name -> (shape, dtype).
INPUTS = {
    "linear": {"x": ((64, 1), np.float32)},
    "mlp": {"x": ((64, 784), np.float32)},
    "mnist_cnn": {"images": ((32, 28, 28, 1), np.float32)},
    "resnet_bn": {"images": ((32, 32, 32, 3), np.uint8)},
    "text_lstm": {"tokens": ((32, 20), np.int32)},
    "gru_seq": {"features": ((32, 12, 8), np.float32)},
    "transformer": {"tokens": ((32, 16), np.int32)},
}
TOKEN_RANGE = {"text_lstm": 100, "transformer": 50}
OUTPUTS = {
    "linear": {"y": "y:0"}, "mlp": {"probs": "probs:0"}, "mnist_cnn": {"probs": "probs:0"},
    "resnet_bn": {"probs": "probs:0"}, "text_lstm": {"probs": "probs:0"},
    "gru_seq": {"scores": "scores:0"}, "transformer": {"probs": "probs:0"},
}
OUTPUT_SHAPES = {  # on one shard
    "linear": (64, 1), "mlp": (64, 10), "mnist_cnn": (32, 10), "resnet_bn": (32, 10),
    "text_lstm": (32, 2), "gru_seq": (32, 12, 4), "transformer": (32, 3),
}
BN_SCOPES = ("stem/bn", "block1/bn1", "block1/bn2", "block2/bn1", "block2/bn2")


def run_build(*args: str) -> subprocess.CompletedProcess:
    """Run zoo/build.py in its own process (it needs tf_keras and disable_v2_behavior)."""
    return subprocess.run(
        [sys.executable, str(BUILD), *args], capture_output=True, text=True, timeout=300
    )


def expected_keys(name: str) -> dict[str, list[int]]:
    """Every checkpoint key with its shape: weights, optimizer slots, global_step."""
    keys = dict(WEIGHTS[name], global_step=[])
    trainable = {k: s for k, s in WEIGHTS[name].items() if k not in NON_TRAINABLE[name]}
    if name in MOMENTUM:
        keys.update({f"{k}/Momentum": s for k, s in trainable.items()})
    else:
        for k, s in trainable.items():
            keys.update({f"{k}/Adam": s, f"{k}/Adam_1": s})
        keys.update(beta1_power=[], beta2_power=[])
    return keys


def import_graph(folder: Path) -> tf.Graph:
    """The model's meta graph, imported into a fresh graph."""
    with tf.Graph().as_default() as graph:
        tf.compat.v1.train.import_meta_graph(str(folder / "model.ckpt.meta"))
    return graph


def file_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file under folder."""
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def ckpt_values(prefix: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(prefix))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    result = run_build("--out", str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    for name in MODELS:
        assert name in result.stdout, result.stdout
    return out


def test_layout(zoo: Path):
    assert sorted(p.name for p in zoo.iterdir()) == sorted([*MODELS, *FORMAT_FILES])  # no .tmp- leftovers
    for name, artifact in FORMAT_FILES.items():
        files = sorted(str(p.relative_to(zoo / name)) for p in (zoo / name).rglob("*") if p.is_file())
        assert files == sorted(["manifest.json", *artifact, *RECORD_SHARDS.get(name, SHARDS)])
    for name in MODELS:
        files = sorted(str(p.relative_to(zoo / name)) for p in (zoo / name).rglob("*") if p.is_file())
        assert files == sorted([
            "manifest.json", "model.ckpt.data-00000-of-00001", "model.ckpt.index",
            "model.ckpt.meta", *[f"shards/shard-{i:03d}.npz" for i in range(4)], *EXTRA_FILES.get(name, []),
        ])


@pytest.mark.parametrize("name", MODELS)
def test_manifest(zoo: Path, name: str):
    manifest = json.loads((zoo / name / "manifest.json").read_text())
    assert manifest["name"] == name
    assert manifest["inputs"] == {k: f"{k}:0" for k in INPUTS[name]}
    assert manifest["outputs"] == OUTPUTS[name]
    assert manifest["tf_version"] == tf.__version__


@pytest.mark.parametrize("name", MODELS)
def test_meta_graph_is_tf1_era(zoo: Path, name: str):
    manifest = json.loads((zoo / name / "manifest.json").read_text())
    with tf.Graph().as_default() as graph:
        tf.compat.v1.train.import_meta_graph(str(zoo / name / "model.ckpt.meta"))
        ops = Counter(op.type for op in graph.get_operations())
        assert ops["VariableV2"] == len(expected_keys(name))
        assert ops["VarHandleOp"] == 0 and ops["ReadVariableOp"] == 0
        for weight in WEIGHTS[name]:  # reference variables are read through .../read
            assert graph.get_operation_by_name(f"{weight}/read").type == "Identity"
        for tensor in [*manifest["inputs"].values(), *manifest["outputs"].values()]:
            graph.get_tensor_by_name(tensor)
        for key, (shape, dtype) in INPUTS[name].items():
            placeholder = graph.get_operation_by_name(key)
            assert placeholder.type == "Placeholder"
            assert placeholder.outputs[0].shape.as_list() == [None, *shape[1:]]
            assert placeholder.outputs[0].dtype.as_numpy_dtype == dtype
        if name in ("text_lstm", "gru_seq"):  # dynamic_rnn as v1 control flow, not functional While
            assert ops["Enter"] and ops["Exit"] and ops["NextIteration"] and ops["TensorArrayV3"]
            assert ops["While"] == ops["StatelessWhile"] == 0
        if name == "resnet_bn":  # tf.layers BN on a tensor `training`: v1 cond (Switch/Merge)
            assert ops["Switch"] and ops["Merge"] and ops["If"] == ops["StatelessIf"] == 0


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_keys_and_optimizer_state(zoo: Path, name: str):
    reader = tf.train.load_checkpoint(str(zoo / name / "model.ckpt"))
    assert reader.get_variable_to_shape_map() == expected_keys(name)
    assert reader.get_variable_to_dtype_map() == {
        k: tf.int64 if k == "global_step" else tf.float32 for k in expected_keys(name)
    }
    assert reader.get_tensor("global_step") == TRAIN_STEPS[name]


@pytest.mark.parametrize("name", MODELS)
def test_shards(zoo: Path, name: str):
    for i in range(4):
        with np.load(zoo / name / "shards" / f"shard-{i:03d}.npz") as shard:
            assert set(shard.files) == set(INPUTS[name])
            for key, (shape, dtype) in INPUTS[name].items():
                assert shard[key].shape == shape and shard[key].dtype == dtype
                if name in TOKEN_RANGE:
                    assert 0 <= shard[key].min() and shard[key].max() < TOKEN_RANGE[name]


@pytest.mark.parametrize("name", MODELS)
def test_graph_runs_from_checkpoint(zoo: Path, name: str):
    """The TF1 graph restores with its own Saver and computes its outputs on a shard."""
    folder = zoo / name
    manifest = json.loads((folder / "manifest.json").read_text())
    with np.load(folder / "shards" / "shard-000.npz") as shard:
        feeds = {manifest["inputs"][k]: shard[k] for k in shard.files}
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        saver = tf.compat.v1.train.import_meta_graph(str(folder / "model.ckpt.meta"))
        saver.restore(sess, str(folder / "model.ckpt"))
        (out,) = sess.run(list(manifest["outputs"].values()), feed_dict=feeds)
    assert out.shape == OUTPUT_SHAPES[name] and out.dtype == np.float32
    assert np.isfinite(out).all()
    if "probs" in manifest["outputs"]:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_example_dnn_parses_the_serialized_examples_of_its_shards(zoo: Path):
    """An Estimator-style serving export: `serving_default` takes strings, parsed by the graph's ParseExampleV2."""
    folder = zoo / "example_dnn"
    shards = [[r.numpy() for r in tf.data.TFRecordDataset(str(folder / shard), "GZIP" * shard.endswith(".gz"))]
              for shard in RECORD_SHARDS["example_dnn"]]
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(folder / "savedmodel"))
        signature = meta.signature_def["serving_default"]
        assert signature.inputs["examples"].name == "input_example_tensor:0"
        assert signature.inputs["examples"].dtype == tf.string.as_datatype_enum
        assert {op.type for op in graph.get_operations()} >= {"ParseExampleV2", "SparseToDense"}
        for records in shards:
            (probs,) = sess.run([signature.outputs["probs"].name], {"input_example_tensor:0": records})
            assert probs.shape == (24, 3)
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_resnet_bn_batch_norm(zoo: Path):
    """Moving statistics were trained; block2/bn2 has no gamma; epsilon 1e-5 on every BN op."""
    folder = zoo / "resnet_bn"
    reader = tf.train.load_checkpoint(str(folder / "model.ckpt"))
    keys = reader.get_variable_to_shape_map()
    assert "block2/bn2/gamma" not in keys and "block2/bn2/beta" in keys
    for scope in BN_SCOPES:
        assert np.abs(reader.get_tensor(f"{scope}/moving_mean")).max() > 1e-3, scope
        assert np.abs(reader.get_tensor(f"{scope}/moving_variance") - 1.0).max() > 1e-3, scope
        assert f"{scope}/moving_mean/Adam" not in keys  # moving statistics are not trained
    graph = import_graph(folder)
    switch = graph.get_operation_by_name("is_training")
    assert switch.type == "PlaceholderWithDefault" and switch.outputs[0].dtype == tf.bool
    bn_ops = [op for op in graph.get_operations()
              if op.type.startswith("FusedBatchNorm") and not op.name.startswith("gradients/")]
    # One training-mode and one inference-mode op per BN layer, in the two branches of a v1 cond.
    assert sorted(op.name for op in bn_ops) == sorted(
        f"{scope}/cond/FusedBatchNormV3{suffix}" for scope in BN_SCOPES for suffix in ("", "_1")
    )
    for op in bn_ops:
        assert op.type == "FusedBatchNormV3"
        assert op.get_attr("epsilon") == pytest.approx(1e-5)
        assert op.get_attr("is_training") == (not op.name.endswith("_1"))


def test_resnet_bn_is_training_switch_changes_outputs(zoo: Path):
    """Batch statistics (is_training=True) and moving statistics (default) give other outputs."""
    folder = zoo / "resnet_bn"
    with np.load(folder / "shards" / "shard-000.npz") as shard:
        images = shard["images"]
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        saver = tf.compat.v1.train.import_meta_graph(str(folder / "model.ckpt.meta"))
        saver.restore(sess, str(folder / "model.ckpt"))
        default = sess.run("probs:0", {"images:0": images})
        inference = sess.run("probs:0", {"images:0": images, "is_training:0": False})
        training = sess.run("probs:0", {"images:0": images, "is_training:0": True})
    np.testing.assert_array_equal(default, inference)
    assert np.abs(training - inference).max() > 1e-6


def test_text_lstm_forget_bias_is_a_run_time_constant(zoo: Path):
    """TF1 LSTMCell adds forget_bias=1.0 inside the while loop: Const rnn/while/lstm_cell/add/y."""
    graph = import_graph(zoo / "text_lstm")
    const = graph.get_operation_by_name("rnn/while/lstm_cell/add/y")
    assert const.type == "Const"
    assert tf.make_ndarray(const.get_attr("value")) == np.float32(1.0)
    (add,) = const.outputs[0].consumers()
    assert add.name == "rnn/while/lstm_cell/add" and add.type in ("Add", "AddV2")
    # f is the third of the four gate slices (i, j, f, o) of the split BiasAdd.
    split = add.inputs[0]
    assert split.op.type == "Split" and split.value_index == 2


def test_new_models_rebuild_deterministically(zoo: Path, tmp_path):
    """Fixed seeds: the new models' checkpoints and shards repeat bit for bit."""
    result = run_build("--out", str(tmp_path), "--only", *NEW_MODELS)
    assert result.returncode == 0, result.stderr[-4000:]
    for name in NEW_MODELS:
        fresh = ckpt_values(tmp_path / name / "model.ckpt")
        first = ckpt_values(zoo / name / "model.ckpt")
        assert fresh.keys() == first.keys()
        for key in first:
            np.testing.assert_array_equal(fresh[key], first[key], err_msg=f"{name}: {key}")
        for i in range(4):
            shard = f"shards/shard-{i:03d}.npz"
            with np.load(tmp_path / name / shard) as a, np.load(zoo / name / shard) as b:
                for key in b.files:
                    np.testing.assert_array_equal(a[key], b[key])


def test_second_run_leaves_files_untouched(zoo: Path):
    before = file_stamps(zoo)
    result = run_build("--out", str(zoo))
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("skipped") == len(MODELS) + len(FORMAT_FILES)
    assert file_stamps(zoo) == before


def test_force_rebuilds_deterministically_and_incomplete_folder_is_replaced(zoo: Path, tmp_path):
    shutil.copytree(zoo / "linear", tmp_path / "linear")
    (tmp_path / "mlp").mkdir()  # an incomplete build: no manifest.json
    (tmp_path / "mlp" / "junk").write_text("half-written")
    before = file_stamps(tmp_path / "linear")

    result = run_build("--out", str(tmp_path), "--only", "mlp")  # no --force
    assert result.returncode == 0, result.stderr[-4000:]
    assert not (tmp_path / "mlp" / "junk").exists()
    assert (tmp_path / "mlp" / "manifest.json").exists()
    assert file_stamps(tmp_path / "linear") == before

    result = run_build("--out", str(tmp_path), "--only", "linear", "mlp", "--force")
    assert result.returncode == 0, result.stderr[-4000:]
    after = file_stamps(tmp_path / "linear")
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linear", "mlp"]  # no temp folders
    for name in ("linear", "mlp"):  # fixed seeds: same trained values as the first build
        fresh, first = ckpt_values(tmp_path / name / "model.ckpt"), ckpt_values(zoo / name / "model.ckpt")
        assert fresh.keys() == first.keys()
        for key in first:
            np.testing.assert_array_equal(fresh[key], first[key], err_msg=key)
        for i in range(4):
            shard = f"shards/shard-{i:03d}.npz"
            with np.load(tmp_path / name / shard) as a, np.load(zoo / name / shard) as b:
                for key in b.files:
                    np.testing.assert_array_equal(a[key], b[key])


def test_unknown_model_is_rejected(tmp_path):
    result = run_build("--out", str(tmp_path), "--only", "nope")
    assert result.returncode != 0
    assert "nope" in result.stderr
    for name in MODELS:
        assert name in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_extra_verification_data_is_written_by_tf_and_numpy_and_added_to_an_older_zoo(zoo: Path, tmp_path):
    """text_lstm's TFRecord of tf.Examples (var-length token ids) and mnist_cnn's npz under a foreign key; a zoo
    built before them gains them on a plain rerun, bit for bit the same, its models untouched."""
    records = [tf.train.Example.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(zoo / "text_lstm" / "tfrecords" / "tokens.tfrecord"))]
    lengths = [len(r.features.feature["token_ids"].int64_list.value) for r in records]
    assert len(records) == 96 and min(lengths) >= 8 and max(lengths) <= 20 and len(set(lengths)) > 1
    ids = [v for r in records for v in r.features.feature["token_ids"].int64_list.value]
    assert all(0 < v < TOKEN_RANGE["text_lstm"] for v in ids)
    with np.load(zoo / "mnist_cnn" / "foreign" / "batch-000.npz") as data:
        assert data.files == ["images__0"] and data["images__0"].shape == (24, 28, 28, 1)

    for name in EXTRA_FILES:
        shutil.copytree(zoo / name, tmp_path / name)
        shutil.rmtree(tmp_path / name / EXTRA_FILES[name][0].split("/")[0])
    before = file_stamps(tmp_path)
    result = run_build("--out", str(tmp_path), "--only", *EXTRA_FILES)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("skipped") == 2 and "wrote its tfrecords/" in result.stdout
    after = file_stamps(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # the models themselves untouched
    for name, files in EXTRA_FILES.items():
        for file in files:
            assert (tmp_path / name / file).read_bytes() == (zoo / name / file).read_bytes()
    assert not [p for p in tmp_path.rglob(".*tmp*")]
