"""Reading TF1 artifacts into a `tf.Graph`, each file once per process.

Every stage of a model runs in that model's own process; the graph they all analyse (inspect,
`auto`, facts read from the graph, the name map's inventory) is imported once there and shared
(`load_graph`, memoised by the file's path and fingerprint). A graph is never imported into the
default (eager) context. `IMPORTS` counts the imports per file, for tests.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.protobuf import meta_graph_pb2

from ferry.cache import fingerprint

IMPORTS: Counter[str] = Counter()  # path -> how many times this process imported it
_GRAPHS: dict[tuple[str, str], tf.Graph] = {}
_LOCK = threading.Lock()


def load_graph(meta_path: str | Path) -> tf.Graph:
    """The `.meta` file's graph (devices cleared), imported once per process and file content: treat it
    as read-only."""
    path = Path(meta_path)
    if not path.is_file():
        raise FileNotFoundError(f"meta graph not found: {path}")
    key = (str(path.resolve()), fingerprint(path))
    with _LOCK:
        if key not in _GRAPHS:
            _GRAPHS[key] = import_graph(path)
        return _GRAPHS[key]


def import_graph(path: Path) -> tf.Graph:
    """Import a `.meta` file into a fresh `tf.Graph` (devices cleared); counted in `IMPORTS`."""
    meta = read_meta_graph_def(path)
    graph = tf.Graph()
    IMPORTS[str(Path(path).resolve())] += 1
    try:
        with graph.as_default():
            tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot import the graph: {err}") from err
    return graph


def read_meta_graph_def(path: Path) -> meta_graph_pb2.MetaGraphDef:
    """Parse a binary (or text) MetaGraphDef; raise ValueError naming the path otherwise."""
    data = path.read_bytes()
    meta = meta_graph_pb2.MetaGraphDef()
    try:
        meta.ParseFromString(data)
    except message.DecodeError:
        try:
            text_format.Parse(data.decode("utf-8"), meta)
        except (UnicodeDecodeError, text_format.ParseError) as err:
            raise ValueError(f"{path} is not a MetaGraphDef (.meta) file") from err
    if not meta.graph_def.node:
        raise ValueError(f"{path} is not a MetaGraphDef (.meta) file: it holds no graph nodes")
    return meta
