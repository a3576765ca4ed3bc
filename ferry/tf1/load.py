"""Reading a TF1 artifact's graph, once per process.

Every stage of a model runs in that model's own process; the graph they all analyse (inspect, `auto`,
facts read from the graph, the name map's inventory) is imported once there and shared (`load_graph`,
memoised by the artifact and its files' fingerprints). A graph is never imported into the default
(eager) context. `IMPORTS` counts the imports per artifact, for tests.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import tensorflow as tf

from ferry.cache import fingerprint
from ferry.sources import FORMATS, detect
from ferry.spec import Source
from ferry.tf1.formats import READERS, FormatError, read_meta_graph_def

IMPORTS: Counter[str] = Counter()  # artifact path -> how many times this process imported its graph
_GRAPHS: dict[tuple, tf.Graph] = {}
_LOCK = threading.Lock()

__all__ = ["IMPORTS", "as_source", "import_graph", "load_graph", "read_meta_graph_def"]


def as_source(artifact: Source | str | Path) -> Source:
    """A spec's source as is; a path (`ferry inspect PATH`) as the source of the format it holds."""
    if isinstance(artifact, Source):
        return artifact
    path = Path(artifact)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    kind = detect(path)
    if kind is None:
        raise FormatError(f"{path} is none of the formats ferry reads: a .meta graph with its checkpoint, a frozen "
                          "GraphDef .pb, a SavedModel folder (saved_model.pb), an Estimator model_dir (graph.pbtxt "
                          "and checkpoints)")
    return Source.model_construct(**{kind: path.resolve()}, inputs={}, outputs={})


def load_graph(artifact: Source | str | Path) -> tf.Graph:
    """The artifact's graph (devices cleared), imported once per process and file content: read-only."""
    source = as_source(artifact)
    files = FORMATS[source.format].graph_files(source)
    key = (source.format, str(source.artifact.resolve()), tuple(fingerprint(f) for f in files),
           source.tag if source.format == "saved_model" else None)
    with _LOCK:
        if key not in _GRAPHS:
            _GRAPHS[key] = import_graph(source)
        return _GRAPHS[key]


def import_graph(source: Source) -> tf.Graph:
    """Import the artifact's graph into a fresh `tf.Graph`; counted in `IMPORTS`."""
    graph = tf.Graph()
    IMPORTS[str(source.artifact.resolve())] += 1
    READERS[source.format].import_into(graph, source)
    return graph
