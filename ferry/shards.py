"""Verification shards in `.npz` archives (one array per serving input, or per key of a key map): checked from
their headers, streamed row block by row block; `load_shard`/`stream_shard` read a spec's shard in any data
format (`ferry/data.py`: npz, npy, tfrecord, image_folder).

Only numpy: the flow process checks shards at validation time without reading their data, and the
model's process streams them. Object arrays are refused, never unpickled.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # ferry.spec imports this module
    from ferry.spec import ModelSpec


class ShardError(ValueError):
    """A shard that cannot feed the model; the message names the shard and what is wrong."""


def npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from the header of a `.npy` file or archive member, leaving `stream` at its
    data."""
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(stream)
    return tuple(shape), fortran, dtype


def array_headers(shard: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of every array in an `.npz`, read from the headers only."""
    try:
        with zipfile.ZipFile(shard) as archive:
            headers = {}
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    shape, _, dtype = npy_header(f)
                headers[member.removesuffix(".npy")] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ShardError(f"{Path(shard).name} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    return headers


def shard_problem(shard: Path, inputs: list[str], keys: dict[str, str] | None = None) -> str | None:
    """What keeps `shard` from feeding `inputs` (serving names; `keys`: serving name -> array name in the file,
    default the serving name), or None: unreadable, an input missing, Python objects, no rows, or inputs with
    different numbers of rows."""
    try:
        headers = array_headers(shard)
    except ShardError as exc:
        return str(exc)
    keys = keys or {}
    missing = [keys.get(name, name) for name in inputs if keys.get(name, name) not in headers]
    if missing:
        named = "key(s)" if keys else "input(s)"
        return f"{shard.name} has no array for {named} {missing} (it holds {sorted(headers)})"
    headers = {name: headers[keys.get(name, name)] for name in inputs}
    objects = [name for name in inputs if headers[name][1].hasobject]
    if objects:
        return f"{shard.name}: {objects} hold Python objects; ferry reads numeric arrays only (never unpickles)"
    rows = {name: headers[name][0][0] if headers[name][0] else None for name in inputs}
    if any(n is None for n in rows.values()):
        return f"{shard.name}: {[k for k, n in rows.items() if n is None]} are scalars; each input needs a batch axis"
    if len(set(rows.values())) > 1:
        return f"{shard.name}: inputs have different numbers of rows: {rows}"
    if not next(iter(rows.values())):
        return f"{shard.name} holds no rows (its arrays are empty)"
    return None


def load_shard(spec: ModelSpec, shard: str | Path) -> dict[str, np.ndarray]:
    """A spec's shard whole (any data format of `ferry.data`): one array per serving input; an error names the
    spec, the shard and what is wrong."""
    from ferry.data import load

    return load(spec, shard)


def stream_shard(spec: ModelSpec, shard: str | Path, size: int) -> Iterator[dict[str, np.ndarray]]:
    """A spec's shard batch by batch (`size` rows), never whole, in its data format (`ferry.data`)."""
    from ferry.data import stream

    return stream(spec, shard, size)


def stream_npz(shard: Path, inputs: list[str], size: int, where: str,
               keys: dict[str, str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """An `.npz` shard batch by batch: each input's rows (array `keys[name]`, default the serving name) are read
    block by block from the archive (an array stored in Fortran order is read whole, as numpy must)."""
    keys = keys or {}
    if problem := shard_problem(Path(shard), inputs, keys):
        raise ShardError(f"{where}: {problem}")
    with zipfile.ZipFile(shard) as archive:
        readers = {name: _RowReader(archive.open(f"{keys.get(name, name)}.npy")) for name in inputs}
        rows = next(iter(readers.values())).rows
        for start in range(0, rows, size):
            yield {name: reader.read(min(size, rows - start)) for name, reader in readers.items()}


class _RowReader:
    """Rows of one `.npy` member of an archive, read in order, a block at a time."""

    def __init__(self, stream):
        self.stream = stream
        shape, fortran, self.dtype = npy_header(stream)
        self.rows, self.row_shape = shape[0], tuple(shape[1:])
        self.whole = np.frombuffer(stream.read(), self.dtype).reshape(shape, order="F") if fortran else None
        self.offset = 0

    def read(self, n: int) -> np.ndarray:
        if self.whole is not None:
            part = self.whole[self.offset:self.offset + n]
        else:
            count = n * int(np.prod(self.row_shape, dtype=np.int64))
            part = np.frombuffer(self.stream.read(count * self.dtype.itemsize), self.dtype).reshape(n, *self.row_shape)
        self.offset += n
        return np.array(part)  # writable, contiguous


def batches(arrays: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    """The rows of `arrays` in batches of `size` (the last may be smaller)."""
    rows = len(next(iter(arrays.values())))
    for start in range(0, rows, size):
        yield {k: v[start:start + size] for k, v in arrays.items()}


def check_signature(arrays: dict[str, np.ndarray], signature: dict[str, dict], where: str) -> None:
    """Raise ShardError when an array does not fit the model input it feeds (`signature`: serving name ->
    {shape without batch, dtype}); None in the shape matches any size."""
    for name, sig in signature.items():
        shape = list(arrays[name].shape[1:])
        want = sig["shape"]
        if len(shape) != len(want) or any(w is not None and w != s for s, w in zip(shape, want)):
            raise ShardError(f"{where}: input {name!r} has rows of shape {shape}; the model takes "
                             f"{['?' if w is None else w for w in want]}")
