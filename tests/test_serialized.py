"""A TF1 graph that takes serialized tf.Examples (`verify.tfrecord.serialized`): the zoo's example_dnn, a TF1
SavedModel as an Estimator's serving export is (a string placeholder, `tf.io.parse_example`, dense layers),
verified from TFRecord files (one GZIP-compressed) through the real stages: the TF1 graph is fed the records, the
Keras model (`architecture: auto`, cut at the parse ops' outputs) what the graph's own parse ops make of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, edit_yaml, restore_stages, run_tf1_source, spec_of

from ferry.parity import ParityError
from ferry.shards import ShardError, load_shard
from ferry.stages import WorkDir

pytestmark = pytest.mark.tf1


@pytest.fixture(scope="module")
def project(tmp_path_factory, zoo) -> Path:
    """`zoo/` (the session's example zoo, zoo/build.py, TF1 in its own process: example_dnn is read, never written)
    and `specs/` with example_dnn's catalogue spec alone."""
    root = tmp_path_factory.mktemp("serialized")
    (root / "zoo").symlink_to(zoo, target_is_directory=True)
    (root / "specs" / "models").mkdir(parents=True)
    shutil.copy(REPO / "specs" / "catalogue.yaml", root / "specs")
    shutil.copy(REPO / "specs" / "models" / "example_dnn.yaml", root / "specs" / "models")
    return root


@pytest.fixture
def catalogue(project, tmp_path) -> Path:
    shutil.copytree(project / "specs", tmp_path / "specs")
    (tmp_path / "zoo").symlink_to(project / "zoo", target_is_directory=True)
    return tmp_path / "specs" / "catalogue.yaml"


def edit(catalogue: Path, change) -> None:
    edit_yaml(catalogue.parent / "models" / "example_dnn.yaml", change)


def test_an_estimator_style_export_verifies_from_serialized_examples(catalogue, tmp_path):
    from tasks.export import export_savedmodel
    from tasks.verify import verify_shard

    edit(catalogue, lambda spec: spec["verify"].update(batch_size=5))  # 24 records: 5 batches per shard
    spec = spec_of(catalogue, "example_dnn")
    assert [Path(s).name for s in spec.shards()] == ["shard-000.tfrecord", "shard-001.tfrecord",
                                                     "shard-002.tfrecord", "shard-003.tfrecord.gz"]
    info, restored = restore_stages(spec, tmp_path / "work")
    # translated from the parse ops' outputs on: the var-length feature's width is free
    assert info["inputs"] == {"x": {"shape": [4], "dtype": "float32"}, "extras": {"shape": [None], "dtype": "float32"}}
    assert [n["name"] for n in info["auto"]["architecture"]["graph"]["nodes"]][:2] == ["Sum", "concat"]
    assert restored["coverage"]["model_weights"] == 1.0
    records = [verify_shard(spec, info, restored, shard, i) for i, shard in enumerate(spec.shards())]
    assert [r["rows"] for r in records] == [24] * 4  # the GZIP shard too
    assert all(r["passed"] and r["outputs"]["probs"]["max_abs_err"] <= 1e-5 for r in records)

    spec = spec.model_copy(update={"export": spec.export.model_copy(update={"dir": tmp_path / "export"})})
    exported = export_savedmodel(spec, info, restored, spec.shards()[3])  # checked on the GZIP shard's first batch
    assert all(o["passed"] and o["rows"] == spec.verify.batch_size for o in exported["outputs"].values())
    assert_served_as_the_tf1_model_was(spec, Path(exported["path"]))


def assert_served_as_the_tf1_model_was(spec, export: Path) -> None:
    """The exported SavedModel's `serving_default` takes the records, under the TF1 signature's name, and parses
    them with the graph's own ops (its clients send what they sent the TF1 model); `features` takes the parsed
    features; both reproduce the TF1 graph on the GZIP shard, loaded as TF2 loads it and as TF Serving does."""
    import json

    import tensorflow as tf

    from ferry.data import SERIALIZED
    from ferry.shards import load_shard
    from ferry.tf1.session import keras_inputs, run_tf1

    arrays = load_shard(spec, spec.shards()[3])  # 24 records holding 0 to 5 `extras` each: one batch, width 5
    want = run_tf1(spec, arrays, 24, "/CPU:0")["probs"]
    loaded = tf.saved_model.load(str(export))
    assert sorted(loaded.signatures) == ["features", "serving_default"]
    serving = loaded.signatures["serving_default"]
    assert {k: (v.dtype, v.shape.as_list()) for k, v in serving.structured_input_signature[1].items()} == {
        "examples": (tf.string, [None])}
    got = serving(examples=tf.constant(arrays[SERIALIZED]))["probs"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    features = keras_inputs(spec, arrays, str(spec.shards()[3]), "/CPU:0")
    got = loaded.signatures["features"](**{k: tf.constant(v) for k, v in features.items()})["probs"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:  # TF Serving's loader
        signature = tf.compat.v1.saved_model.load(session, ["serve"], str(export)).signature_def["serving_default"]
        got = session.run(signature.outputs["probs"].name, {signature.inputs["examples"].name: arrays[SERIALIZED]})
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    marker = json.loads((export / "ferry-export.json").read_text())["savedmodel"]
    assert marker == {"signature": "serving_default", "inputs": ["examples"], "outputs": ["probs"],
                      "features_signature": "features", "features": ["x", "extras"]}


def test_the_first_divergence_is_found_on_the_parsed_features(catalogue, tmp_path):
    from ferry.keras3.build import model_from_info, weight_paths
    from tasks.verify import verify_shard

    spec = spec_of(catalogue, "example_dnn")
    info, restored = restore_stages(spec, tmp_path / "work")
    model = model_from_info(spec, info)
    model.load_weights(restored["weights"])
    bias = weight_paths(model)["hidden/bias"]
    bias.assign(bias.numpy() + 0.5)
    model.save_weights(tmp_path / "broken.weights.h5")
    with pytest.raises(ParityError) as failed:
        verify_shard(spec, info, {**restored, "weights": str(tmp_path / "broken.weights.h5")}, spec.shards()[0], 0)
    found = failed.value.record["first_divergence"]
    assert (found["layer"], found["correspondence"], found["tf1"]) == ("hidden", "auto", "hidden/BiasAdd:0")
    assert found["inputs"] == {"concat": 0.0}  # its input, fed from the same parse, agrees


def test_a_record_the_graph_cannot_parse_is_named_not_a_traceback(catalogue, tmp_path):
    import tensorflow as tf

    from tasks.verify import verify_shard

    bad = tmp_path / "bad"
    bad.mkdir()
    good = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "zoo/example_dnn/shards/shard-000.tfrecord"))]
    lacking_x = tf.train.Example(features=tf.train.Features(feature={
        "extras": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))})).SerializeToString()
    with tf.io.TFRecordWriter(str(bad / "d.tfrecord")) as writer:
        for record in [*good[:6], lacking_x]:
            writer.write(record)
    edit(catalogue, lambda spec: spec["verify"].update(shards=str(bad / "*.tfrecord"), batch_size=4))
    spec = spec_of(catalogue, "example_dnn")
    info, restored = restore_stages(spec, tmp_path / "work")
    with pytest.raises(ShardError) as info_:
        verify_shard(spec, info, restored, spec.shards()[0], 0)
    message = str(info_.value)
    assert message.startswith(f"{spec.spec_file}: verify.shards: d.tfrecord: records 4..6: the graph's own parsing "
                              "(fed at input_example_tensor:0) refuses a record:")
    assert "Traceback" not in message and "\n" not in message


@pytest.mark.parametrize(("tensor", "message"), [
    ("examples:0", "verify.tfrecord.serialized: no tensor 'examples:0' in the graph (its string placeholders: "
                   "['input_example_tensor:0'])"),
    ("labels:0", "verify.tfrecord.serialized: node labels (Placeholder) holds int64 values, not the serialized "
                 "tf.Examples of a string tensor (the graph's string placeholders: ['input_example_tensor:0'])"),
])
def test_a_wrong_serialized_tensor_is_named_at_inspect(catalogue, tmp_path, tensor, message):
    from tasks.inspect import inspect_graph

    edit(catalogue, lambda spec: spec["verify"]["tfrecord"].update(serialized=tensor))
    spec = spec_of(catalogue, "example_dnn")
    with pytest.raises(ValueError) as failed:
        inspect_graph(spec, WorkDir(tmp_path))
    assert str(failed.value) == f"{spec.spec_file}: {message}"


def test_an_input_not_parsed_from_the_records_is_named(catalogue, tmp_path):
    from tasks.inspect import inspect_graph

    edit(catalogue, lambda spec: spec["source"]["inputs"].update(extras="hidden/kernel/read:0"))
    spec = spec_of(catalogue, "example_dnn")
    with pytest.raises(ValueError, match=r"source.inputs.extras: 'hidden/kernel/read:0' is not computed from "
                                         r"'input_example_tensor:0' \(verify.tfrecord.serialized\)"):
        inspect_graph(spec, WorkDir(tmp_path))


# An Estimator-style serving export whose features go through a vocabulary table (feature columns'
# categorical_column_with_vocabulary_list): the ids the Keras model takes are made by a table, not by the records
# alone, so the exported signature cannot parse the records itself.
TABLE_MODEL = """
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
v1.disable_v2_behavior()
out = Path(sys.argv[1])
rng = np.random.RandomState(0)


def examples(n):
    rows = []
    for _ in range(n):
        feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=rng.normal(size=2).tolist())),
                   "color": tf.train.Feature(bytes_list=tf.train.BytesList(
                       value=[[b"red", b"green", b"blue", b"teal"][rng.randint(4)]]))}
        rows.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return rows


serialized = v1.placeholder(tf.string, [None], name="input_example_tensor")
parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32),
                                          "color": tf.io.FixedLenFeature([], tf.string)}, name="ParseExample")
x = tf.identity(parsed["x"], name="x_parsed")
table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
    tf.constant(["red", "green", "blue"]), tf.constant([0, 1, 2], tf.int64)), default_value=3, name="colors")
ids = tf.identity(table.lookup(parsed["color"]), name="color_ids")
embedding = v1.get_variable("color_embedding", [4, 3])
h = tf.concat([x, tf.gather(embedding, ids)], axis=1)
probs = tf.nn.softmax(v1.layers.dense(h, 2, name="out"), name="probs")
with v1.Session() as sess:
    sess.run([v1.global_variables_initializer(), v1.tables_initializer()])
    builder = v1.saved_model.Builder(str(out / "savedmodel"))
    builder.add_meta_graph_and_variables(
        sess, ["serve"], main_op=v1.tables_initializer(),
        signature_def_map={"serving_default": v1.saved_model.predict_signature_def(
            inputs={"examples": serialized}, outputs={"probs": probs})})
    builder.save()
(out / "shards").mkdir()
for i in range(2):
    with tf.io.TFRecordWriter(str(out / "shards" / f"shard-{i}.tfrecord")) as writer:
        for record in examples(12):
            writer.write(record)
"""


def test_features_the_records_alone_cannot_make_are_served_parsed_and_said(tmp_path):
    import json

    from ferry.spec import load_spec
    from ferry.tf1.session import keras_inputs, run_tf1
    from tasks.export import call_savedmodel, export_savedmodel
    from tasks.verify import verify_shard

    (tmp_path / "zoo").mkdir()
    run_tf1_source(TABLE_MODEL, tmp_path / "zoo", tmp_path / "zoo")
    path = tmp_path / "colors.yaml"
    path.write_text(yaml.safe_dump({
        "name": "colors", "architecture": "auto",
        "source": {"saved_model": "zoo/savedmodel", "inputs": {"x": "x_parsed:0", "color_ids": "color_ids:0"},
                   "outputs": {"probs": "probs:0"}},
        "verify": {"shards": "zoo/shards/*.tfrecord", "batch_size": 4,
                   "tfrecord": {"serialized": "input_example_tensor:0"}},
        "export": {"dir": "export"}}, sort_keys=False))
    spec = load_spec(path)
    info, restored = restore_stages(spec, tmp_path / "work")
    assert all(verify_shard(spec, info, restored, shard, i)["passed"] for i, shard in enumerate(spec.shards()))
    exported = export_savedmodel(spec, info, restored, spec.shards()[0])
    assert all(o["passed"] for o in exported["outputs"].values())
    marker = json.loads((Path(exported["path"]) / "ferry-export.json").read_text())["savedmodel"]
    assert marker["inputs"] == ["x", "color_ids"]  # the parsed features, and why
    assert marker["parsing_not_carried"] == (
        f"{spec.spec_file}: source.inputs.color_ids: 'color_ids:0' is computed from node colors (HashTableV2), not "
        "from the serialized tf.Examples alone (verify.tfrecord.serialized: 'input_example_tensor:0')")
    arrays = load_shard(spec, spec.shards()[1])
    features = keras_inputs(spec, arrays, str(spec.shards()[1]), "/CPU:0")
    np.testing.assert_allclose(call_savedmodel(spec, Path(exported["path"]), features)["probs"],
                               run_tf1(spec, arrays, 12, "/CPU:0")["probs"], atol=1e-5, rtol=1e-5)


def test_the_serialized_records_peek_without_tensorflow(catalogue):
    from ferry.data import SERIALIZED, peek

    spec = spec_of(catalogue, "example_dnn")
    records = peek(spec, spec.shards()[3], 3)[SERIALIZED]  # the GZIP shard, read with gzip
    assert records.dtype == object and len(records) == 3 and all(isinstance(r, bytes) for r in records)
    assert np.all([len(r) > 20 for r in records])


def test_scan_drafts_the_serialized_spec_itself(project, tmp_path):
    from ferry.tf1.draft import draft_spec, survey

    found = survey(project / "zoo" / "example_dnn" / "savedmodel")
    assert found.serialized == "input_example_tensor:0"  # the signature's one string input, read by a parse op
    assert found.inputs == {"x": "ParseExample/ParseExample:3", "extras": "extras:0"}  # by feature key
    assert found.translation is not None and not found.blockers
    text = draft_spec(found, tmp_path / "specs" / "models" / "example_dnn.yaml", form="auto")
    assert "  inputs: {x: 'ParseExample/ParseExample:3', extras: 'extras:0'}" in text
    assert '  tfrecord: {serialized: "input_example_tensor:0"}' in text and "shards/*.tfrecord*" in text
