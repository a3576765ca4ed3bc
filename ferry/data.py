"""Verification data: the formats a shard may be in, one registered class each (`DATA_FORMATS`).

    verify: {shards: shards/*.npz}                                             # npz, keyed by serving name
    verify: {shards: shards/*.npz, npz: {keys: {images: images__0}}}          # serving name -> key in the file
    verify: {shards: data/*.npy, npy: {}}                                      # one input: the array itself
    verify: {shards: data/*.tfrecord, tfrecord: {records_per_shard: 32, features: {tokens: {...}}}}
    verify: {shards: data/*.tfrecord.gz, tfrecord: {serialized: "input_example_tensor:0"}}  # the graph parses
    verify: {shards: images/batch-*/, image_folder: {size: [32, 32], scale: 0.00392156862745098}}

A shard is the unit of caching and parallelism: a file (or, for `.npy` with several inputs, a folder of
`<key>.npy`), or a range of records of a TFRecord file, written `file[start:stop]`. Every format streams a
shard batch by batch, so memory stays that of one batch however large or many the shards are.

This module imports no TensorFlow: the flow process checks and peeks at shards with numpy and plain
Python (a TFRecord file's framing and `tf.Example` protos are read by hand, GZIP through `gzip`), and only the
model's process parses records, with `tf.io.parse_example`, or, for a graph that takes serialized
`tf.Example`s (`serialized`), with the graph's own parse ops (`ferry.tf1.session.Reference.inputs_and_outputs`):
then a batch is the records as they are, `{SERIALIZED: bytes}`. Images are read with PIL on both sides.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ferry.shards import ShardError, npy_header, shard_problem, stream_npz

if TYPE_CHECKING:  # ferry.spec imports this module
    from ferry.spec import ModelSpec

DATA_FORMATS: dict[str, DataFormat] = {}
DEFAULT_FORMAT = "npz"
# A batch of serialized tf.Examples, fed as they are at the graph's string tensor (never a serving name: those
# are identifiers).
SERIALIZED = "<serialized>"


def data_format(name: str):
    """Register a data format under the `verify` key that names it in a spec."""
    def register(cls: type[DataFormat]) -> type[DataFormat]:
        DATA_FORMATS[name] = cls(name)
        return cls
    return register


class Options(BaseModel):
    """A format's options in the spec (`verify.<format>`); unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class KeyMap(Options):
    """Where each serving input is in a file: serving name -> key (default: the serving name). The spec's
    `keys`; an attribute `keys` would make the model look like a mapping to code that walks it (Prefect)."""

    key_map: dict[str, str] = Field(default_factory=dict, alias="keys", description="serving input name -> key")


# --- shard references: a file, or records start..stop of a file ----------------------------------------------

_RANGE = re.compile(r"^(?P<file>.+)\[(?P<start>\d+):(?P<stop>\d+)\]$")


def shard_ref(file: str | Path, start: int | None = None, stop: int | None = None) -> str:
    """A shard as a string: the file, or `file[start:stop]` for records start..stop-1 of it."""
    return str(file) if start is None else f"{file}[{start}:{stop}]"


def split_ref(shard: str | Path) -> tuple[Path, int | None, int | None]:
    """(file, start, stop) of a shard reference; start and stop are None for a whole file."""
    text = str(shard)
    match = _RANGE.match(text)
    if match and not Path(text).exists():
        return Path(match["file"]), int(match["start"]), int(match["stop"])
    return Path(text), None, None


def shard_file(shard: str | Path) -> Path:
    """The file (or folder) a shard reads: what the cache fingerprints."""
    return split_ref(shard)[0]


def shard_stem(shard: str | Path) -> str:
    """A shard's short name: the file's stem (of `x.tfrecord.gz`: `x`), with its record range (`data-000-32`)."""
    file, start, stop = split_ref(shard)
    stem = Path(file.stem).stem if file.suffix == ".gz" else file.stem
    return stem if start is None else f"{stem}-{start}-{stop}"


def shard_label(shard: str | Path) -> str:
    """A shard's name for messages: the file's name, with its record range."""
    file, start, stop = split_ref(shard)
    return file.name if start is None else f"{file.name}[{start}:{stop}]"


# --- the registry's base class -------------------------------------------------------------------------------

class DataFormat:
    """One data format: its spec options, its shards, what validation can see, and how a shard streams."""

    options: ClassVar[type[Options]] = Options

    def __init__(self, name: str):
        self.name = name

    def units(self, files: list[Path], options: Options) -> list[str]:
        """The shards the files the glob matched make (default: one per file)."""
        return [shard_ref(f) for f in files]

    def spec_problems(self, inputs: list[str], options: Options) -> list[tuple[str, str, Any]]:
        """(field under `verify.<format>`, message, value) for each option that cannot feed `inputs`."""
        return []

    def problem(self, file: Path, inputs: list[str], options: Options) -> str | None:
        """What keeps `file` from feeding `inputs`, seen without TensorFlow and without reading it whole."""
        return None

    def stream(self, shard: str, inputs: list[str], options: Options, size: int,
               where: str) -> Iterator[dict[str, np.ndarray]]:
        """The shard's rows for `inputs`, `size` at a time; a ShardError (prefixed by `where`) names the file and
        the key when it cannot."""
        raise NotImplementedError

    def peek(self, shard: str, inputs: list[str], options: Options, rows: int | None,
             where: str) -> dict[str, np.ndarray]:
        """The first `rows` rows (None: all), in the flow process (no TensorFlow)."""
        parts = []
        taken = 0
        for batch in self.stream(shard, inputs, options, rows or 1024, where):
            parts.append(batch)
            taken += len(next(iter(batch.values())))
            if rows is not None and taken >= rows:
                break
        return {name: np.concatenate([p[name] for p in parts])[:rows] for name in inputs}


def _unknown_keys(inputs: list[str], keys: dict[str, str]) -> list[tuple[str, str, Any]]:
    unknown = sorted(set(keys) - set(inputs))
    if unknown:
        return [("keys", f"names {unknown}, not serving inputs of the model {sorted(inputs)}", unknown)]
    return []


@data_format("npz")
class Npz(DataFormat):
    """An `.npz` archive (`np.savez`): one array per input, named by the serving name or `keys`."""

    options = KeyMap

    def spec_problems(self, inputs: list[str], options: KeyMap) -> list[tuple[str, str, Any]]:
        return _unknown_keys(inputs, options.key_map)

    def problem(self, file: Path, inputs: list[str], options: KeyMap) -> str | None:
        return shard_problem(file, inputs, options.key_map)

    def stream(self, shard: str, inputs: list[str], options: KeyMap, size: int,
               where: str) -> Iterator[dict[str, np.ndarray]]:
        return stream_npz(shard_file(shard), inputs, size, where, options.key_map)


@data_format("npy")
class Npy(DataFormat):
    """`.npy` arrays (`np.save`): a model of one input takes a file's array directly (the glob matches files);
    a model of several reads one folder per shard (the glob matches folders) holding `<key>.npy` per input."""

    options = KeyMap

    def spec_problems(self, inputs: list[str], options: KeyMap) -> list[tuple[str, str, Any]]:
        return _unknown_keys(inputs, options.key_map)

    def files(self, shard: Path, inputs: list[str], keys: dict[str, str]) -> dict[str, Path]:
        """Input -> its `.npy` file."""
        if shard.is_dir():
            return {name: shard / f"{keys.get(name, name)}.npy" for name in inputs}
        if len(inputs) != 1:
            raise ShardError(f"{shard.name} is one array; the model takes {len(inputs)} inputs {inputs}: match one "
                             "folder per shard holding <key>.npy per input")
        return {inputs[0]: shard}

    def problem(self, file: Path, inputs: list[str], options: KeyMap) -> str | None:
        try:
            files = self.files(file, inputs, options.key_map)
        except ShardError as exc:
            return str(exc)
        rows = {}
        for name, path in files.items():
            label = f"{file.name}/{path.name}" if file.is_dir() else file.name
            if not path.is_file():
                return f"{file.name} has no {path.name} for input {name!r}"
            try:
                with open(path, "rb") as f:
                    shape, _, dtype = npy_header(f)
            except (ValueError, OSError, EOFError) as exc:
                return f"{label} is not a readable .npy file ({type(exc).__name__}: {exc})"
            if dtype.hasobject:
                return f"{label} holds Python objects; ferry reads numeric arrays only (never unpickles)"
            if not shape:
                return f"{label} is a scalar; input {name!r} needs a batch axis"
            rows[name] = shape[0]
        if len(set(rows.values())) > 1:
            return f"{file.name}: inputs have different numbers of rows: {rows}"
        if not next(iter(rows.values())):
            return f"{file.name} holds no rows (its arrays are empty)"
        return None

    def stream(self, shard: str, inputs: list[str], options: KeyMap, size: int,
               where: str) -> Iterator[dict[str, np.ndarray]]:
        file = shard_file(shard)
        if problem := self.problem(file, inputs, options):
            raise ShardError(f"{where}: {problem}")
        arrays = {name: np.load(path, mmap_mode="r", allow_pickle=False)
                  for name, path in self.files(file, inputs, options.key_map).items()}
        rows = len(next(iter(arrays.values())))
        for start in range(0, rows, size):  # memory-mapped: only this batch's rows are read
            yield {name: np.array(a[start:start + size]) for name, a in arrays.items()}


# --- TFRecord files of tf.Example -----------------------------------------------------------------------------

RecordDtype = Literal["float32", "int64", "string"]
_KINDS = {"bytes_list": "string", "float_list": "float32", "int64_list": "int64"}


class Feature(Options):
    """One serving input read from a `tf.Example` feature."""

    feature: str | None = Field(None, description="the feature's name in the records (default: the serving name)")
    dtype: RecordDtype = Field(description="the feature's list type: float32, int64 or string (bytes)")
    shape: list[int] = Field(default_factory=list, description="per record, without batch; var_len: [padded length]")
    var_len: bool = Field(False, description="a list of any length, padded (or refused when longer) to shape[0]")
    pad: float | int | str = Field(0, description="var_len: the padding value")
    cast: str | None = Field(None, description="numpy dtype fed to the model (e.g. int32 for int64 token ids)")

    @field_validator("shape")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d <= 0 for d in value):
            raise ValueError(f"dimensions must be positive, got {value}")
        return value

    @field_validator("cast")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                np.dtype(value)
            except TypeError:
                raise ValueError(f"{value!r} is not a numpy dtype") from None
        return value

    @model_validator(mode="after")
    def _var_len_shape(self) -> Feature:
        if self.var_len and len(self.shape) != 1:
            raise ValueError(f"a var_len feature has shape [padded length]: one dimension, not {len(self.shape)}")
        fits = {"string": str, "int64": int, "float32": (int, float)}[self.dtype]
        if self.var_len and (not isinstance(self.pad, fits) or isinstance(self.pad, bool)):
            raise ValueError(f"pad {self.pad!r} is not a {self.dtype} value")
        return self


class TFRecordOptions(Options):
    """TFRecord files of `tf.Example`: a feature per serving input, or (`serialized`) the records fed as they are
    to a graph that parses them itself; a shard is a file, or `records_per_shard` records of one."""

    features: dict[str, Feature] = Field(default_factory=dict, description="serving input name -> its feature")
    serialized: str | None = Field(None, description="the TF1 graph's string tensor the records are fed at as they "
                                   "are (input_example_tensor:0); the serving inputs are its parse ops' outputs")
    records_per_shard: int | None = Field(None, gt=0, description="split each file into shards of N records")
    compression: Literal["auto", "none", "GZIP"] = Field("auto", description="auto: GZIP for a file named *.gz")

    @field_validator("serialized")
    @classmethod
    def _tensor_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^:\s]+:\d+", value):
            raise ValueError(f"tensor name {value!r} must look like 'op_name:0'")
        return value

    @model_validator(mode="after")
    def _features_or_serialized(self) -> TFRecordOptions:
        if not self.features and self.serialized is None:
            raise ValueError("needs `features` (serving input -> its feature) or `serialized` (the graph's string "
                             "tensor that takes the records as they are)")
        if self.features and self.serialized is not None:
            raise ValueError("`features` and `serialized` exclude each other: with `serialized` the graph's own "
                             "parse ops read the features")
        return self

    def feature_name(self, serving: str) -> str:
        return self.features[serving].feature or serving

    def gzip(self, file: Path) -> bool:
        """Whether `file` is GZIP-compressed: `compression`, or by its `.gz` suffix."""
        return self.compression == "GZIP" or (self.compression == "auto" and file.name.endswith(".gz"))


_RECORD_COUNTS: dict[tuple[str, int, int, bool], list[int]] = {}


def record_offsets(file: Path, compressed: bool = False) -> list[int]:
    """The byte offset of every record of a TFRecord file, in its decompressed stream when `compressed` (GZIP)
    (its framing read, never its data, unless decompressing); ShardError when the file is not one. Remembered by
    size and mtime."""
    stat = os.stat(file)
    key = (str(file), stat.st_size, stat.st_mtime_ns, compressed)
    if key not in _RECORD_COUNTS:
        offsets, pos = [], 0
        try:
            with gzip.open(file, "rb") if compressed else open(file, "rb") as f:
                while header := f.read(12):
                    if len(header) < 12:
                        raise ShardError(f"{file.name} is not a readable TFRecord file (truncated at byte {pos})")
                    (length,) = struct.unpack("<Q", header[:8])
                    end = pos + 12 + length + 4
                    reached = f.seek(end)  # a GZIP stream stops at its end; a file seeks past it
                    if reached < end or (not compressed and end > stat.st_size):
                        raise ShardError(f"{file.name} is not a readable TFRecord file (a record at byte {pos} "
                                         f"claims {length} bytes, past the end of the file)")
                    offsets.append(pos)
                    pos = end
        except (OSError, EOFError, zlib.error) as exc:  # gzip's: not GZIP, or truncated
            if not compressed:
                raise
            raise ShardError(f"{file.name} is not a readable GZIP-compressed file ({type(exc).__name__}: {exc}); "
                             "verify.tfrecord.compression says how the files are compressed") from None
        _RECORD_COUNTS[key] = offsets
    return _RECORD_COUNTS[key]


def read_records(file: Path, start: int = 0, stop: int | None = None, compressed: bool = False) -> Iterator[bytes]:
    """Records start..stop-1 of a TFRecord file (GZIP-compressed when `compressed`), as bytes (plain Python, no
    TensorFlow)."""
    offsets = record_offsets(file, compressed)[start:stop]
    with gzip.open(file, "rb") if compressed else open(file, "rb") as f:
        for offset in offsets:
            f.seek(offset)
            (length,) = struct.unpack("<Q", f.read(12)[:8])
            yield f.read(length)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message: an int (varint), bytes (others)."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + width], pos + width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield tag >> 3, wire, value


def decode_example(record: bytes) -> dict[str, tuple[str, list]]:
    """A serialized `tf.Example`, decoded by hand: feature name -> (float32 | int64 | string, values)."""
    out: dict[str, tuple[str, list]] = {}
    for number, _, features in _fields(record):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features):
            if entry_number != 1:
                continue
            parts = {n: v for n, _, v in _fields(entry)}
            name = parts.get(1, b"").decode()
            kind, values = "float32", []
            for list_number, _, body in _fields(parts.get(2, b"")):
                kind = ("string", "float32", "int64")[list_number - 1]
                for _, wire, v in _fields(body):
                    if kind == "string":
                        values.append(v)
                    elif kind == "float32":
                        values.extend(np.frombuffer(v, "<f4").tolist())
                    elif wire == 2:  # packed int64s
                        pos = 0
                        while pos < len(v):
                            n, pos = _varint(v, pos)
                            values.append(n - (1 << 64) if n >= 1 << 63 else n)
                    else:
                        values.append(v - (1 << 64) if v >= 1 << 63 else v)
            out[name] = (kind, values)
    return out


def _numpy_dtype(feature: Feature) -> Any:
    return object if feature.dtype == "string" else np.dtype(feature.dtype)


def _finish(values: np.ndarray, counts: np.ndarray, serving: str, feature: Feature, name: str,
            file: Path, first: int, where: str) -> np.ndarray:
    """One batch of a feature: var-length values padded to shape[0] (longer ones refused), cast."""
    if feature.var_len:
        length = feature.shape[0]
        too_long = np.flatnonzero(counts > length)
        if too_long.size:
            i = int(too_long[0])
            raise ShardError(f"{where}: {file.name} record {first + i}: feature {name!r} (input {serving!r}) has "
                             f"{int(counts[i])} values; its padded length is {length}")
        if values.shape[1] < length:
            width = [(0, 0), (0, length - values.shape[1])]
            values = np.pad(values, width, constant_values=feature.pad)
    return values.astype(feature.cast) if feature.cast else values


@data_format("tfrecord")
class TFRecord(DataFormat):
    """TFRecord files of `tf.Example` (GZIP-compressed too), parsed with `tf.io.parse_example` in the model's
    process: fixed-length features (`shape`), var-length ones padded to a length (`var_len`, `pad`); or, with
    `serialized`, streamed as the records themselves (`{SERIALIZED: bytes}`), for the graph's own parse ops."""

    options = TFRecordOptions

    def units(self, files: list[Path], options: TFRecordOptions) -> list[str]:
        if options.records_per_shard is None:
            return [shard_ref(f) for f in files]
        out = []
        for file in files:
            try:
                total = len(record_offsets(file, options.gzip(file)))
            except (ShardError, OSError):
                out.append(shard_ref(file))  # fails at verify, naming the file (validation said so first)
                continue
            n = options.records_per_shard
            out += [shard_ref(file, start, min(start + n, total)) for start in range(0, total, n)]
        return out

    def spec_problems(self, inputs: list[str], options: TFRecordOptions) -> list[tuple[str, str, Any]]:
        if options.serialized is not None:
            return []  # the graph's parse ops make the inputs
        problems = _unknown_keys(inputs, options.features)
        problems = [("features", message, value) for _, message, value in problems]
        missing = [name for name in inputs if name not in options.features]
        if missing:
            problems.append(("features", f"no feature for serving input(s) {missing}", sorted(options.features)))
        return problems

    def problem(self, file: Path, inputs: list[str], options: TFRecordOptions) -> str | None:
        try:
            compressed = options.gzip(file)
            offsets = record_offsets(file, compressed)
            if not offsets:
                return f"{file.name} holds no records"
            first = decode_example(next(read_records(file, 0, 1, compressed)))
        except ShardError as exc:
            return str(exc)
        except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
            return f"{file.name}: record 0 is not a tf.Example ({type(exc).__name__}: {exc})"
        for serving in inputs:
            feature = options.features.get(serving)
            if feature is None:
                continue  # a spec problem, reported as such
            name = options.feature_name(serving)
            if name not in first:
                return f"{file.name} record 0 has no feature {name!r} for input {serving!r} (it holds {sorted(first)})"
            kind = first[name][0]
            if first[name][1] and kind != feature.dtype:
                return f"{file.name} record 0: feature {name!r} holds {kind} values; the spec says {feature.dtype}"
        return None

    def stream(self, shard: str, inputs: list[str], options: TFRecordOptions, size: int,
               where: str) -> Iterator[dict[str, np.ndarray]]:
        import tensorflow as tf  # the model's process only

        file, start, stop = split_ref(shard)
        if not file.is_file():
            raise ShardError(f"{where}: {file.name}: no such file")
        start = start or 0
        if options.serialized is not None:
            yield from self.stream_serialized(file, start, stop, options, size, where)
            return
        specs = {}
        for serving in inputs:
            feature, dtype = options.features[serving], tf.as_dtype(options.features[serving].dtype)
            specs[options.feature_name(serving)] = tf.io.VarLenFeature(dtype) if feature.var_len else \
                tf.io.FixedLenFeature(feature.shape, dtype)
        first = start
        for serialized in self.batches(file, start, stop, options, size, where):
            with tf.device("/CPU:0"):
                n = int(serialized.shape[0])
                names = [f"{file.name} record {first + i}" for i in range(n)]
                try:
                    parsed = tf.compat.v1.io.parse_example(serialized, specs, example_names=names)
                except tf.errors.OpError as exc:
                    raise ShardError(f"{where}: {file.name}: records {first}..{first + n - 1} do not parse as the "
                                     f"spec's features: {_first_line(exc)}") from None
                batch = {}
                for serving in inputs:
                    feature, name = options.features[serving], options.feature_name(serving)
                    value = parsed[name]
                    if feature.var_len:
                        counts = np.bincount(value.indices.numpy()[:, 0], minlength=n)
                        dense = tf.sparse.to_dense(value, default_value=tf.constant(feature.pad, value.dtype))
                        value = dense.numpy()
                    else:
                        counts, value = None, value.numpy()
                    batch[serving] = _finish(value, counts, serving, feature, name, file, first, where)
            yield batch
            first += n

    def batches(self, file: Path, start: int, stop: int | None, options: TFRecordOptions, size: int,
                where: str) -> Iterator[Any]:
        """Records start..stop-1 of a file as string tensors of `size` records (`tf.data`, in file order)."""
        import tensorflow as tf  # the model's process only

        with tf.device("/CPU:0"):
            dataset = tf.data.TFRecordDataset(str(file), "GZIP" if options.gzip(file) else "").skip(start)
            if stop is not None:
                dataset = dataset.take(stop - start)
            batches = iter(dataset.batch(size))  # sequential: records in file order, no parallel map
        while True:
            try:
                with tf.device("/CPU:0"):
                    serialized = next(batches)
            except StopIteration:
                return
            except tf.errors.OpError as exc:
                kind = "GZIP-compressed TFRecord" if options.gzip(file) else "TFRecord"
                raise ShardError(f"{where}: {file.name} is not a readable {kind} file ({_first_line(exc)})") from None
            yield serialized

    def stream_serialized(self, file: Path, start: int, stop: int | None, options: TFRecordOptions, size: int,
                          where: str) -> Iterator[dict[str, np.ndarray]]:
        """The records as they are, `{SERIALIZED: bytes objects}`, for the graph's own parse ops."""
        for serialized in self.batches(file, start, stop, options, size, where):
            yield {SERIALIZED: serialized.numpy()}

    def peek(self, shard: str, inputs: list[str], options: TFRecordOptions, rows: int | None,
             where: str) -> dict[str, np.ndarray]:
        """The first rows decoded by hand (the flow process imports no TensorFlow)."""
        file, start, stop = split_ref(shard)
        start = start or 0
        stop = stop if rows is None else min(stop if stop is not None else start + rows, start + rows)
        try:
            records = list(read_records(file, start, stop, options.gzip(file)))
        except ShardError as exc:
            raise ShardError(f"{where}: {exc}") from None
        if options.serialized is not None:
            return {SERIALIZED: np.array(records, dtype=object)}
        examples = [decode_example(r) for r in records]
        out = {}
        for serving in inputs:
            feature, name = options.features[serving], options.feature_name(serving)
            lists = []
            for i, example in enumerate(examples):
                if name not in example:
                    raise ShardError(f"{where}: {file.name} record {start + i} has no feature {name!r}")
                lists.append(example[name][1])
            counts = np.array([len(v) for v in lists])
            dtype = _numpy_dtype(feature)
            if feature.var_len:
                width = max([feature.shape[0], *counts]) if len(counts) else feature.shape[0]
                values = np.full((len(lists), width), feature.pad, dtype=dtype)
                for i, v in enumerate(lists):
                    values[i, :len(v)] = v
            else:
                values = np.array(lists, dtype=dtype).reshape(len(lists), *feature.shape)
            out[serving] = _finish(values, counts, serving, feature, name, file, start, where)
        return out


# --- a folder of image files ---------------------------------------------------------------------------------

class ImageFolderOptions(Options):
    """A folder of image files per shard (in file-name order), each decoded, resized and scaled into one row."""

    input: str | None = Field(None, description="the serving input fed (default: the model's only one)")
    size: list[int] = Field(min_length=2, max_length=2, description="[height, width] every image is resized to")
    resample: Literal["nearest", "bilinear", "bicubic"] = Field("bilinear", description="PIL's resampling filter")
    mode: Literal["RGB", "L"] = Field("RGB", description="RGB: 3 channels; L: 1 (grey)")
    scale: float = Field(1.0, description="row = pixels * scale + offset (float32)")
    offset: float = 0.0
    dtype: Literal["float32", "uint8"] = Field("float32", description="uint8: the resized pixels, unscaled")
    extensions: list[str] = Field([".png", ".jpg", ".jpeg", ".bmp"], description="the files read, by suffix")

    @field_validator("size")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d <= 0 for d in value):
            raise ValueError("[height, width] must be positive")
        return value

    @model_validator(mode="after")
    def _unscaled_uint8(self) -> ImageFolderOptions:
        if self.dtype == "uint8" and (self.scale, self.offset) != (1.0, 0.0):
            raise ValueError("dtype uint8 feeds the pixels unscaled: scale and offset are for float32")
        return self


@data_format("image_folder")
class ImageFolder(DataFormat):
    """Image files (PNG, JPEG, BMP), one folder per shard (the glob matches folders), read with PIL in both
    processes: converted to `mode`, resized to `size`, scaled; they feed one serving input."""

    options = ImageFolderOptions

    def fed(self, inputs: list[str], options: ImageFolderOptions) -> str | None:
        return options.input or (inputs[0] if len(inputs) == 1 else None)

    def spec_problems(self, inputs: list[str], options: ImageFolderOptions) -> list[tuple[str, str, Any]]:
        if options.input is not None and options.input not in inputs:
            return [("input", f"is not a serving input of the model {sorted(inputs)}", options.input)]
        if len(inputs) != 1:
            return [("input", f"a folder of images feeds one input; the model takes {sorted(inputs)}: the others "
                     "need another data format", options.input)]
        return []

    def images(self, folder: Path, options: ImageFolderOptions) -> list[Path]:
        suffixes = {e.lower() for e in options.extensions}
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)

    def problem(self, file: Path, inputs: list[str], options: ImageFolderOptions) -> str | None:
        if not file.is_dir():
            return f"{file.name} is not a folder (an image_folder shard is a folder of images)"
        images = self.images(file, options)
        if not images:
            return f"{file.name} holds no image file ({', '.join(options.extensions)})"
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(images[0]):  # the header only
                pass
        except (UnidentifiedImageError, OSError) as exc:
            return f"{file.name}/{images[0].name} is not a readable image ({exc})"
        return None

    def row(self, path: Path, options: ImageFolderOptions, where: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        filters = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                   "bicubic": Image.Resampling.BICUBIC}
        try:
            with Image.open(path) as image:
                image = image.convert(options.mode).resize((options.size[1], options.size[0]),
                                                           filters[options.resample])
                pixels = np.asarray(image)
        except (UnidentifiedImageError, OSError) as exc:
            raise ShardError(f"{where}: {path.parent.name}/{path.name} is not a readable image ({exc})") from None
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        if options.dtype == "uint8":
            return pixels.astype(np.uint8)
        return (pixels.astype(np.float32) * np.float32(options.scale) + np.float32(options.offset)).astype(np.float32)

    def stream(self, shard: str, inputs: list[str], options: ImageFolderOptions, size: int,
               where: str) -> Iterator[dict[str, np.ndarray]]:
        folder = shard_file(shard)
        if problem := self.problem(folder, inputs, options):
            raise ShardError(f"{where}: {problem}")
        name = self.fed(inputs, options)
        images = self.images(folder, options)
        for start in range(0, len(images), size):
            yield {name: np.stack([self.row(p, options, where) for p in images[start:start + size]])}


def _first_line(exc: BaseException) -> str:
    """TensorFlow's message, one line, without its kernel's internal name (`{{function_node ...}}`, `[Op:...]`)."""
    message = getattr(exc, "message", None) or str(exc)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", message)
    return re.sub(r"\s+", " ", (message.strip().splitlines() or [type(exc).__name__])[0])[:400]


# --- a spec's data --------------------------------------------------------------------------------------------

def where(spec: ModelSpec) -> str:
    """The prefix of every data error: the spec file and its field."""
    return f"{spec.spec_file}: verify.shards"


def units(spec: ModelSpec) -> list[str]:
    """A spec's shards, in order."""
    return DATA_FORMATS[spec.verify.format].units(spec.shard_paths(), spec.verify.data)


def stream(spec: ModelSpec, shard: str | Path, size: int) -> Iterator[dict[str, np.ndarray]]:
    """A spec's shard, `size` rows at a time: one array per serving input, or the serialized tf.Examples
    (`{SERIALIZED: bytes}`) for a graph that parses them (`Reference.inputs_and_outputs` makes the inputs)."""
    fmt = DATA_FORMATS[spec.verify.format]
    return fmt.stream(str(shard), list(spec.source.inputs), spec.verify.data, size, where(spec))


def load(spec: ModelSpec, shard: str | Path) -> dict[str, np.ndarray]:
    """A spec's shard whole (export re-checks on one): its serving inputs, or its `{SERIALIZED: records}`."""
    parts = list(stream(spec, shard, spec.verify.batch_size))
    if not parts:
        raise ShardError(f"{where(spec)}: {shard_label(shard)} holds no rows")
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def peek(spec: ModelSpec, shard: str | Path, rows: int | None = None) -> dict[str, np.ndarray]:
    """A spec's shard's first `rows` rows (None: all) in the flow process, without TensorFlow."""
    return peek_with(spec.verify.format, spec.verify.data.model_dump(), shard, list(spec.source.inputs), rows,
                     where(spec))


def peek_with(format: str, options: dict[str, Any], shard: str | Path, inputs: list[str], rows: int | None,
              where: str = "verify.shards") -> dict[str, np.ndarray]:
    """`peek` from plain values (a format's name and options as JSON), for records replayed later."""
    fmt = DATA_FORMATS[format]
    return fmt.peek(str(shard), inputs, fmt.options.model_validate(options), rows, where)
