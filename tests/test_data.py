"""Verification data formats (`ferry/data.py`): `.npz` with a key map, `.npy`, TFRecord files of `tf.Example`
(written here by `tf.io.TFRecordWriter`), records_per_shard ranges, and the errors, at validation and at
verify time, that name the spec file, the field, the data file and the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ferry.data import (
    DATA_FORMATS,
    SERIALIZED,
    decode_example,
    peek,
    record_offsets,
    shard_file,
    shard_ref,
    split_ref,
    stream,
)
from ferry.shards import ShardError, load_shard
from ferry.spec import SpecError, Verify, load_spec

SPEC = """
name: demo
source:
  meta: m/model.ckpt.meta
  inputs: INPUTS
  outputs: {probs: "probs:0"}
architecture:
  layers:
    - {class: Dense, units: 2}
verify:
  shards: "SHARDS"
  batch_size: 4
export:
  dir: out/demo
"""


def spec_file(folder: Path, shards: str, verify: dict | None = None, inputs: str = '{images: "images:0"}') -> Path:
    """A spec beside fake graph files (validation reads no graph), with `verify` merged into its section."""
    (folder / "m").mkdir(exist_ok=True)
    for name in ("model.ckpt.meta", "model.ckpt.index"):
        (folder / "m" / name).write_bytes(b"")
    data = yaml.safe_load(SPEC.replace("INPUTS", inputs).replace("SHARDS", shards))
    data["verify"].update(verify or {})
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return [str(p) for p in info.value.problems]


# --- npz and npy: numpy only ----------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_registry_and_the_spec_name_the_same_formats():
    assert list(DATA_FORMATS) == ["npz", "npy", "tfrecord", "image_folder"]
    assert all(name in Verify.model_fields for name in DATA_FORMATS)


@pytest.mark.unit
def test_npz_with_foreign_keys_reads_through_the_key_map(tmp_path):
    images = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    np.savez(tmp_path / "a.npz", images__0=images, other=np.zeros(10))
    spec = load_spec(spec_file(tmp_path, "*.npz", {"npz": {"keys": {"images": "images__0"}}}))
    assert spec.verify.format == "npz" and spec.shards() == [str(tmp_path / "a.npz")]
    # Prefect walks a task's parameters and reads a model with a `keys` attribute as a mapping: the key map is
    # `keys` in the spec, `key_map` on the model
    assert not hasattr(spec.verify.npz, "keys") and spec.verify.npz.model_dump() == {"keys": {"images": "images__0"}}
    batches = list(stream(spec, spec.shards()[0], 4))
    assert [len(b["images"]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in batches]), images)
    np.testing.assert_array_equal(load_shard(spec, spec.shards()[0])["images"], images)
    np.testing.assert_array_equal(peek(spec, spec.shards()[0], 3)["images"], images[:3])


@pytest.mark.unit
def test_npz_key_missing_from_a_file_is_named_at_validation_and_at_verify_time(tmp_path):
    np.savez(tmp_path / "a.npz", images__0=np.zeros((4, 3), np.float32))
    path = spec_file(tmp_path, "*.npz", {"npz": {"keys": {"images": "images_0"}}})
    [problem] = problems_of(path)
    assert problem == (f"{path}: verify.shards: a.npz has no array for key(s) ['images_0'] (it holds ['images__0']) "
                       f"(got '{tmp_path / 'a.npz'}')")
    good = load_spec(spec_file(tmp_path, "*.npz", {"npz": {"keys": {"images": "images__0"}}}))
    bad = good.model_copy(update={"verify": good.verify.model_copy(update={"npz": type(good.verify.npz)(
        keys={"images": "pixels"})})})
    with pytest.raises(ShardError, match=r"demo.yaml: verify.shards: a.npz has no array for key\(s\) \['pixels'\]"):
        list(stream(bad, bad.shards()[0], 4))


@pytest.mark.unit
def test_a_key_map_naming_no_input_is_refused(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((4, 3), np.float32))
    path = spec_file(tmp_path, "*.npz", {"npz": {"keys": {"pixels": "images"}}})
    assert problems_of(path) == [f"{path}: verify.npz.keys: names ['pixels'], not serving inputs of the model "
                                 f"['images'] (got ['pixels'])"]


@pytest.mark.unit
def test_npy_single_input_takes_the_array_and_several_inputs_read_a_folder(tmp_path):
    x = np.random.RandomState(0).normal(size=(9, 5)).astype(np.float32)
    np.save(tmp_path / "x-000.npy", x)
    spec = load_spec(spec_file(tmp_path, "*.npy", {"npy": {}}, inputs='{x: "x:0"}'))
    batches = list(stream(spec, spec.shards()[0], 4))
    assert [len(b["x"]) for b in batches] == [4, 4, 1]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), x)

    (tmp_path / "two" / "s0").mkdir(parents=True)
    np.save(tmp_path / "two" / "s0" / "x.npy", x)
    np.save(tmp_path / "two" / "s0" / "mask_0.npy", np.ones((9, 5), np.int32))
    spec = load_spec(spec_file(tmp_path, "two/*", {"npy": {"keys": {"mask": "mask_0"}}},
                               inputs='{x: "x:0", mask: "mask:0"}'))
    arrays = load_shard(spec, spec.shards()[0])
    assert arrays["x"].shape == (9, 5) and arrays["mask"].dtype == np.int32

    path = spec_file(tmp_path, "two/*", {"npy": {}}, inputs='{x: "x:0", mask: "mask:0"}')
    assert problems_of(path) == [f"{path}: verify.shards: s0 has no mask.npy for input 'mask' "
                                 f"(got '{tmp_path / 'two' / 's0'}')"]


@pytest.mark.unit
def test_format_options_are_validated_with_file_field_and_value(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((4, 3), np.float32))
    tokens = {"feature": "token_ids", "dtype": "int32", "shape": [20]}
    path = spec_file(tmp_path, "*.npz", {"tfrecord": {"features": {"images": tokens}}})
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: verify.tfrecord.features.images.dtype: Input should be 'float32', 'int64' "
                              "or 'string'") and problem.endswith("(got 'int32')")

    path = spec_file(tmp_path, "*.npz", {"tfrecord": {"features": {"images": {"dtype": "int64", "var_len": True,
                                                                              "shape": [4, 5]}}}})
    assert problems_of(path) == [f"{path}: verify.tfrecord.features.images: a var_len feature has shape "
                                 "[padded length]: one dimension, not 2 (got {'dtype': 'int64', 'var_len': True, "
                                 "'shape': [4, 5]})"]

    path = spec_file(tmp_path, "*.npz", {"tfrecord": {"features": {"images": {"dtype": "float32"}},
                                                      "records_per_shard": 0}})
    assert problems_of(path) == [f"{path}: verify.tfrecord.records_per_shard: Input should be greater than 0 (got 0)"]

    path = spec_file(tmp_path, "*.npz", {"tfrecord": {"features": {"images": {"dtype": "float32", "cast": "int99"}}}})
    assert problems_of(path) == [f"{path}: verify.tfrecord.features.images.cast: 'int99' is not a numpy dtype "
                                 "(got 'int99')"]

    path = spec_file(tmp_path, "*.npz", {"npz": {"keys": {}}, "npy": {}})
    assert problems_of(path) == [f"{path}: verify: names at most one data format of `npz`, `npy`, `tfrecord`, "
                                 "`image_folder` "
                                 "(got ['npz', 'npy'])"]

    path = spec_file(tmp_path, "*.npz", {"npz": {"key": {"images": "x"}}})
    assert problems_of(path) == [f"{path}: verify.npz.key: unknown key (got {{'images': 'x'}})"]


@pytest.mark.unit
def test_shard_references_name_a_file_or_a_record_range(tmp_path):
    assert split_ref(shard_ref(tmp_path / "d.tfrecord", 32, 64)) == (tmp_path / "d.tfrecord", 32, 64)
    assert split_ref(str(tmp_path / "d.tfrecord")) == (tmp_path / "d.tfrecord", None, None)
    assert shard_file(shard_ref(tmp_path / "d.tfrecord", 0, 5)) == tmp_path / "d.tfrecord"  # what the cache reads


# --- TFRecord files of tf.Example, written by TensorFlow --------------------------------------------------------


def write_examples(path: Path, rows: list[dict[str, tuple[str, list]]], compression: str = "") -> Path:
    """A TFRecord file of `tf.Example`s, written by `tf.io.TFRecordWriter` (`compression`: "" or "GZIP"): per row,
    feature -> (kind, values)."""
    import tensorflow as tf

    lists = {"int64": lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v)),
             "float32": lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=v)),
             "string": lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v))}
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type=compression)) as writer:
        for row in rows:
            feature = {name: lists[kind](values) for name, (kind, values) in row.items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return path


def token_rows(n: int, seed: int = 0) -> list[dict[str, tuple[str, list]]]:
    rng = np.random.RandomState(seed)
    return [{"token_ids": ("int64", rng.randint(1, 50, size=rng.randint(1, 7)).tolist()),
             "weights": ("float32", rng.normal(size=3).tolist())} for _ in range(n)]


TOKENS = {"feature": "token_ids", "dtype": "int64", "var_len": True, "shape": [6], "pad": -1, "cast": "int32"}
WEIGHTS = {"dtype": "float32", "shape": [3]}


def tfrecord_spec(folder: Path, **options):
    options.setdefault("features", {"tokens": TOKENS, "weights": WEIGHTS})
    return load_spec(spec_file(folder, "*.tfrecord", {"tfrecord": options},
                               inputs='{tokens: "tokens:0", weights: "weights:0"}'))


def expected_tokens(rows: list[dict], length: int, pad: int) -> np.ndarray:
    out = np.full((len(rows), length), pad, np.int32)
    for i, row in enumerate(rows):
        ids = row["token_ids"][1]
        out[i, :len(ids)] = ids
    return out


@pytest.mark.tf1
def test_var_length_features_are_padded_and_fixed_ones_shaped(tmp_path):
    rows = token_rows(10)
    write_examples(tmp_path / "d.tfrecord", rows)
    spec = tfrecord_spec(tmp_path)
    [shard] = spec.shards()
    batches = list(stream(spec, shard, 4))  # tf.io.parse_example, 4 records at a time
    assert [len(b["tokens"]) for b in batches] == [4, 4, 2]
    tokens = np.concatenate([b["tokens"] for b in batches])
    assert tokens.dtype == np.int32 and tokens.shape == (10, 6)
    np.testing.assert_array_equal(tokens, expected_tokens(rows, 6, -1))
    weights = np.concatenate([b["weights"] for b in batches])
    np.testing.assert_array_equal(weights, np.array([r["weights"][1] for r in rows], np.float32))
    # the flow process's own reading (plain Python, no TensorFlow) agrees with tf.io.parse_example
    peeked = peek(spec, shard)
    np.testing.assert_array_equal(peeked["tokens"], tokens)
    np.testing.assert_array_equal(peeked["weights"], weights)


@pytest.mark.tf1
def test_records_per_shard_splits_each_file_into_ranges_in_order(tmp_path):
    rows = token_rows(10, seed=1)
    write_examples(tmp_path / "a.tfrecord", rows[:7])
    write_examples(tmp_path / "b.tfrecord", rows[7:])
    spec = tfrecord_spec(tmp_path, records_per_shard=3)
    a, b = tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"
    assert spec.shards() == [f"{a}[0:3]", f"{a}[3:6]", f"{a}[6:7]", f"{b}[0:3]"]
    assert len(record_offsets(a)) == 7
    parts = [load_shard(spec, shard)["tokens"] for shard in spec.shards()]
    assert [len(p) for p in parts] == [3, 3, 1, 3]
    np.testing.assert_array_equal(np.concatenate(parts), expected_tokens(rows, 6, -1))  # every record once, in order
    np.testing.assert_array_equal(peek(spec, spec.shards()[1], 2)["tokens"], expected_tokens(rows[3:5], 6, -1))


@pytest.mark.tf1
def test_hand_decoding_reads_every_list_kind(tmp_path):
    import tensorflow as tf

    row = {"i": ("int64", [0, -3, 2**40]), "f": ("float32", [0.5, -1.25]), "s": ("string", [b"ab", b""])}
    write_examples(tmp_path / "d.tfrecord", [row])
    record = next(iter(tf.data.TFRecordDataset(str(tmp_path / "d.tfrecord")))).numpy()
    assert decode_example(record) == {"i": ("int64", [0, -3, 2**40]), "f": ("float32", [0.5, -1.25]),
                                      "s": ("string", [b"ab", b""])}


@pytest.mark.tf1
def test_validation_names_a_feature_the_records_lack_or_hold_as_another_type(tmp_path):
    write_examples(tmp_path / "d.tfrecord", token_rows(3))
    path = spec_file(tmp_path, "*.tfrecord", {"tfrecord": {"features": {"tokens": {**TOKENS, "feature": "ids"},
                                                                        "weights": WEIGHTS}}},
                     inputs='{tokens: "tokens:0", weights: "weights:0"}')
    [problem] = problems_of(path)
    assert problem == (f"{path}: verify.shards: d.tfrecord record 0 has no feature 'ids' for input 'tokens' (it holds "
                       f"['token_ids', 'weights']) (got '{tmp_path / 'd.tfrecord'}')")
    path = spec_file(tmp_path, "*.tfrecord", {"tfrecord": {"features": {"tokens": TOKENS,
                                                                        "weights": {**WEIGHTS, "dtype": "int64"}}}},
                     inputs='{tokens: "tokens:0", weights: "weights:0"}')
    [problem] = problems_of(path)
    assert "d.tfrecord record 0: feature 'weights' holds float32 values; the spec says int64" in problem
    path = spec_file(tmp_path, "*.tfrecord", {"tfrecord": {"features": {"tokens": TOKENS}}},
                     inputs='{tokens: "tokens:0", weights: "weights:0"}')
    assert problems_of(path) == [f"{path}: verify.tfrecord.features: no feature for serving input(s) ['weights'] "
                                 "(got ['tokens'])"]
    (tmp_path / "d.tfrecord").write_bytes((tmp_path / "d.tfrecord").read_bytes()[:-7])  # truncated
    [problem] = problems_of(spec_file(tmp_path, "*.tfrecord", {"tfrecord": {"features": {"tokens": TOKENS,
                                                                                        "weights": WEIGHTS}}},
                                      inputs='{tokens: "tokens:0", weights: "weights:0"}'))
    assert "d.tfrecord is not a readable TFRecord file (a record at byte" in problem


@pytest.mark.tf1
def test_verify_time_errors_name_the_file_the_record_and_the_feature(tmp_path):
    rows = token_rows(6)
    rows[4] = {"token_ids": rows[4]["token_ids"]}  # record 4 lacks `weights`: validation sees record 0 only
    write_examples(tmp_path / "d.tfrecord", rows)
    spec = tfrecord_spec(tmp_path)
    with pytest.raises(ShardError) as info:
        list(stream(spec, spec.shards()[0], 4))
    message = str(info.value)
    assert message.startswith(f"{spec.spec_file}: verify.shards: d.tfrecord: records 4..5 do not parse")
    assert "d.tfrecord record 4" in message and "weights" in message and "Traceback" not in message

    rows = token_rows(6)
    rows[2]["weights"] = ("float32", [1.0, 2.0])  # two values where the spec says shape [3]
    write_examples(tmp_path / "d.tfrecord", rows)
    with pytest.raises(ShardError, match=r"d.tfrecord: records 0..3 do not parse .*d.tfrecord record 2.*weights"):
        list(stream(spec, spec.shards()[0], 4))

    rows = token_rows(6)
    rows[1]["weights"] = ("int64", [1, 2, 3])  # int64 where the spec says float32
    write_examples(tmp_path / "d.tfrecord", rows)
    with pytest.raises(ShardError, match=r"d.tfrecord record 1, Key: weights, .*Data types don't match"):
        list(stream(spec, spec.shards()[0], 4))

    rows = token_rows(6)
    rows[5]["token_ids"] = ("int64", list(range(1, 9)))  # 8 ids, padded length 6
    write_examples(tmp_path / "d.tfrecord", rows)
    with pytest.raises(ShardError, match=r"verify.shards: d.tfrecord record 5: feature 'token_ids' \(input 'tokens'\) "
                                         r"has 8 values; its padded length is 6"):
        list(stream(spec, spec.shards()[0], 4))


@pytest.mark.tf1
def test_gzip_files_are_read_by_their_suffix_or_by_the_compression_option(tmp_path):
    rows = token_rows(7, seed=2)
    write_examples(tmp_path / "a.tfrecord.gz", rows[:5], "GZIP")
    write_examples(tmp_path / "b.tfrecord", rows[5:])
    spec = load_spec(spec_file(tmp_path, "*.tfrecord*", {"tfrecord": {"features": {"tokens": TOKENS,
                                                                                   "weights": WEIGHTS},
                                                                      "records_per_shard": 3}},
                               inputs='{tokens: "tokens:0", weights: "weights:0"}'))
    a, b = tmp_path / "a.tfrecord.gz", tmp_path / "b.tfrecord"
    assert spec.shards() == [f"{a}[0:3]", f"{a}[3:5]", f"{b}[0:2]"]  # records counted in the GZIP stream
    streamed = np.concatenate([b["tokens"] for shard in spec.shards() for b in stream(spec, shard, 2)])
    np.testing.assert_array_equal(streamed, expected_tokens(rows, 6, -1))  # tf.data, GZIP for a.tfrecord.gz only
    np.testing.assert_array_equal(peek(spec, spec.shards()[1])["tokens"], expected_tokens(rows[3:5], 6, -1))

    (tmp_path / "c").mkdir()
    write_examples(tmp_path / "c" / "part-0", rows, "GZIP")  # no suffix: `compression: GZIP` says so
    spec = load_spec(spec_file(tmp_path / "c", "part-*", {"tfrecord": {"features": {"tokens": TOKENS,
                                                                                    "weights": WEIGHTS},
                                                                       "compression": "GZIP"}},
                               inputs='{tokens: "tokens:0", weights: "weights:0"}'))
    np.testing.assert_array_equal(load_shard(spec, spec.shards()[0])["tokens"], expected_tokens(rows, 6, -1))

    path = spec_file(tmp_path, "b.tfrecord", {"tfrecord": {"features": {"tokens": TOKENS, "weights": WEIGHTS},
                                                           "compression": "GZIP"}},
                     inputs='{tokens: "tokens:0", weights: "weights:0"}')
    [problem] = problems_of(path)  # a plain file said to be GZIP: named, never a traceback
    assert problem.startswith(f"{path}: verify.shards: b.tfrecord is not a readable GZIP-compressed file (BadGzipFile")
    assert "verify.tfrecord.compression" in problem
    path = spec_file(tmp_path, "*.gz", {"tfrecord": {"features": {"tokens": TOKENS, "weights": WEIGHTS},
                                                     "compression": "none"}},
                     inputs='{tokens: "tokens:0", weights: "weights:0"}')
    assert "a.tfrecord.gz is not a readable TFRecord file" in problems_of(path)[0]
    path = spec_file(tmp_path, "*.gz", {"tfrecord": {"features": {"tokens": TOKENS}, "compression": "zip"}},
                     inputs='{tokens: "tokens:0"}')
    assert problems_of(path)[0].startswith(f"{path}: verify.tfrecord.compression: Input should be 'auto', 'none' or "
                                           "'GZIP'")


@pytest.mark.tf1
def test_serialized_examples_stream_as_the_records_themselves(tmp_path):
    import tensorflow as tf

    rows = token_rows(5, seed=3)
    write_examples(tmp_path / "d.tfrecord.gz", rows, "GZIP")
    spec = load_spec(spec_file(tmp_path, "*.gz", {"tfrecord": {"serialized": "input_example_tensor:0",
                                                               "records_per_shard": 4}},
                               inputs='{tokens: "ParseExample/ParseExampleV2:0"}'))
    assert spec.verify.serialized == "input_example_tensor:0" and len(spec.shards()) == 2
    written = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "d.tfrecord.gz"), "GZIP")]
    batches = [b for shard in spec.shards() for b in stream(spec, shard, 3)]
    assert [sorted(b) for b in batches] == [[SERIALIZED]] * 3 and [len(b[SERIALIZED]) for b in batches] == [3, 1, 1]
    assert [r for b in batches for r in b[SERIALIZED]] == written  # as they are, in order
    assert list(peek(spec, spec.shards()[0], 2)[SERIALIZED]) == written[:2]  # the flow process: plain Python
    assert decode_example(written[0])["token_ids"] == rows[0]["token_ids"]


@pytest.mark.unit
def test_a_serialized_spec_names_its_string_tensor_and_the_parsed_inputs(tmp_path):
    (tmp_path / "d.tfrecord").write_bytes(b"")
    serialized = {"serialized": "input_example_tensor:0"}
    path = spec_file(tmp_path, "*.tfrecord", {"tfrecord": {**serialized, "features": {"images": WEIGHTS}}})
    assert problems_of(path) == [f"{path}: verify.tfrecord: `features` and `serialized` exclude each other: with "
                                 "`serialized` the graph's own parse ops read the features (got "
                                 "{'serialized': 'input_example_tensor:0', 'features': {'images': {'dtype': "
                                 "'float32', 'shape': [3]}}})"]
    path = spec_file(tmp_path, "*.tfrecord", {"tfrecord": {"records_per_shard": 2}})
    assert problems_of(path)[0].startswith(f"{path}: verify.tfrecord: needs `features` (serving input -> its "
                                           "feature) or `serialized`")
    path = spec_file(tmp_path, "*.tfrecord", {"tfrecord": {"serialized": "input_example_tensor"}})
    assert problems_of(path) == [f"{path}: verify.tfrecord.serialized: tensor name 'input_example_tensor' must look "
                                 "like 'op_name:0' (got 'input_example_tensor')"]
    path = spec_file(tmp_path, "*.tfrecord", {"tfrecord": serialized}, inputs='{examples: "input_example_tensor:0"}')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: verify.tfrecord.serialized: the graph is fed the records at "
                              "'input_example_tensor:0'; source.inputs names the tensors the Keras model takes")
    path = spec_file(tmp_path, "*.tfrecord", {"tfrecord": serialized})
    empty = tmp_path / "d.tfrecord"
    assert problems_of(path) == [f"{path}: verify.shards: d.tfrecord holds no records (got '{empty}')"]


@pytest.mark.tf1
def test_a_migration_verifies_and_exports_from_a_tfrecord_of_var_length_examples(catalogue, tmp_path):
    """The example catalogue's text_lstm_tfrecord: the zoo's TF1 LSTM fed 96 tf.Examples of 8..20 token ids,
    padded to 20, three shards of 32 records; every shard within 1e-5, the export re-checked on the first."""
    from conftest import restore_stages, spec_of

    from tasks.export import export_savedmodel
    from tasks.verify import verify_shard

    spec = spec_of(catalogue, "text_lstm_tfrecord")
    assert spec.verify.format == "tfrecord" and [s.rsplit("/", 1)[-1] for s in spec.shards()] == [
        "tokens.tfrecord[0:32]", "tokens.tfrecord[32:64]", "tokens.tfrecord[64:96]"]
    info, restored = restore_stages(spec, tmp_path / "work")
    records = [verify_shard(spec, info, restored, shard, i) for i, shard in enumerate(spec.shards())]
    assert [r["rows"] for r in records] == [32, 32, 32]
    assert all(r["passed"] and r["outputs"]["probs"]["max_abs_err"] <= 1e-5 for r in records)
    tokens = load_shard(spec, spec.shards()[0])["tokens"]
    assert tokens.dtype == np.int32 and tokens.shape == (32, 20) and (tokens[:, -1] == 0).any()  # padded rows

    spec = spec.model_copy(update={"export": spec.export.model_copy(update={"dir": tmp_path / "export"})})
    exported = export_savedmodel(spec, info, restored, spec.shards()[0])
    assert exported["checked_on"].endswith("tokens.tfrecord[0:32]")
    assert all(o["max_abs_err"] <= 1e-5 for o in exported["outputs"].values())


@pytest.mark.tf1
def test_the_catalogue_verifies_mnist_from_foreign_npz_keys(catalogue, tmp_path):
    from conftest import restore_stages, spec_of

    from tasks.verify import verify_shard

    spec = spec_of(catalogue, "mnist_cnn_keys")
    assert spec.verify.npz.key_map == {"images": "images__0"} and len(spec.shards()) == 2
    info, restored = restore_stages(spec, tmp_path / "work")
    for i, shard in enumerate(spec.shards()):
        record = verify_shard(spec, info, restored, shard, i)
        assert record["passed"] and record["rows"] == 24


# --- a folder of images, written by tf.io.encode_png -------------------------------------------------------------


def write_pngs(folder: Path, images: np.ndarray) -> None:
    import tensorflow as tf

    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        (folder / f"img-{i:03d}.png").write_bytes(tf.io.encode_png(image).numpy())


@pytest.mark.tf1
def test_an_image_folder_is_decoded_resized_and_scaled_in_file_order(tmp_path):
    from PIL import Image

    images = np.random.RandomState(0).randint(0, 256, size=(5, 12, 10, 3)).astype(np.uint8)
    write_pngs(tmp_path / "set-0", images)
    (tmp_path / "set-0" / "notes.txt").write_text("not an image")  # other files are not read
    options = {"size": [12, 10], "scale": 1 / 255, "offset": -0.5}
    spec = load_spec(spec_file(tmp_path, "set-*", {"image_folder": options}))
    assert spec.shards() == [str(tmp_path / "set-0")]
    batches = list(stream(spec, spec.shards()[0], 2))
    assert [len(b["images"]) for b in batches] == [2, 2, 1]
    got = np.concatenate([b["images"] for b in batches])
    assert got.dtype == np.float32 and got.shape == (5, 12, 10, 3)
    np.testing.assert_allclose(got, images.astype(np.float32) / 255 - 0.5, rtol=0, atol=1e-6)

    spec = load_spec(spec_file(tmp_path, "set-*", {"image_folder": {"size": [6, 5], "mode": "L", "dtype": "uint8"}}))
    got = load_shard(spec, spec.shards()[0])["images"]
    want = np.asarray(Image.fromarray(images[3]).convert("L").resize((5, 6), Image.Resampling.BILINEAR))
    assert got.shape == (5, 6, 5, 1) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[3, ..., 0], want)


@pytest.mark.tf1
def test_image_folder_problems_name_the_folder_the_file_and_the_field(tmp_path):
    write_pngs(tmp_path / "set-0", np.zeros((2, 4, 4, 3), np.uint8))
    path = spec_file(tmp_path, "set-*", {"image_folder": {"size": [4, 4]}}, inputs='{a: "a:0", b: "b:0"}')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: verify.image_folder.input: a folder of images feeds one input; the model "
                              "takes ['a', 'b']")
    path = spec_file(tmp_path, "set-*", {"image_folder": {"size": [4, 0]}})
    assert problems_of(path) == [f"{path}: verify.image_folder.size: [height, width] must be positive "
                                 "(got [4, 0])"]
    (tmp_path / "set-1").mkdir()
    path = spec_file(tmp_path, "set-*", {"image_folder": {"size": [4, 4]}})
    assert problems_of(path) == [f"{path}: verify.shards: set-1 holds no image file (.png, .jpg, .jpeg, .bmp) "
                                 f"(got '{tmp_path / 'set-1'}')"]
    (tmp_path / "set-1").rmdir()
    spec = load_spec(path)
    (tmp_path / "set-0" / "img-001.png").write_bytes(b"not a png")  # validation opened the first image only
    with pytest.raises(ShardError, match=r"demo.yaml: verify.shards: set-0/img-001.png is not a readable image"):
        load_shard(spec, spec.shards()[0])
