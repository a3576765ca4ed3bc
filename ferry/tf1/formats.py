"""Reading each source format of `ferry.sources` with TensorFlow: its graph, its weights, its signature,
and the original artifact restored in a Session as the reference.

A format is one `@reader("name")` class here, beside its `@source_format("name")` class in
`ferry/sources.py` (what it reads, what validation checks); `tests/test_formats.py` holds them to the
same names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow.python.util import deprecation

from ferry.facts import VALUE_PASS_OPS, VARIABLE_OPS
from ferry.mapping.namemap import Tensor
from ferry.spec import Source

READERS: dict[str, Reader] = {}

# Op inputs that hold a layer's weights: a frozen graph's constants feeding them are its weights.
WEIGHT_SLOTS: dict[str, tuple[int, ...]] = {
    "Conv2D": (1,), "Conv3D": (1,), "DepthwiseConv2dNative": (1,), "Conv2DBackpropInput": (1,),
    "MatMul": (1,), "BatchMatMul": (1,), "BatchMatMulV2": (1,), "BiasAdd": (1,),
    "FusedBatchNorm": (1, 2, 3, 4), "FusedBatchNormV2": (1, 2, 3, 4), "FusedBatchNormV3": (1, 2, 3, 4),
    "GatherV2": (0,), "Gather": (0,), "ResourceGather": (0,),
}


class FormatError(ValueError):
    """An artifact that is not what its spec says (a truncated .pb, a missing tag or signature)."""


def reader(name: str):
    """Register the reader of the source format `name` (a key of `ferry.sources.FORMATS`)."""
    def register(cls: type[Reader]) -> type[Reader]:
        READERS[name] = cls()
        return cls
    return register


class Reader:
    """How to read one format. `import_into` fills a graph (returning its Saver, if it has one);
    `weights` lists and reads the weights; `load` fills a Session's empty graph and its variables as the
    artifact's own loading would (the reference)."""

    def import_into(self, graph: tf.Graph, source: Source) -> Any:
        raise NotImplementedError

    def weights(self, source: Source, graph: tf.Graph) -> WeightStore:
        return CheckpointWeights(source.checkpoint_prefix)

    def load(self, session: tf.compat.v1.Session, source: Source) -> None:
        """Import the graph into the session's graph, then restore its variables with its own Saver."""
        saver = self.import_into(session.graph, source)
        if saver is not None:
            with session.graph.as_default():  # else the Saver takes itself for an eager one
                saver.restore(session, str(source.checkpoint_prefix))

    def signature(self, source: Source) -> tuple[dict[str, str], dict[str, str]] | None:
        """(inputs, outputs) the artifact declares itself (serving name -> tensor), if any."""
        return None


# -- weights ------------------------------------------------------------------------------------------------

class WeightStore:
    """Named weights: what a checkpoint holds, or a frozen graph's weight constants."""

    def entries(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError


class CheckpointWeights(WeightStore):
    """A name-based checkpoint (`tf.train.load_checkpoint`)."""

    METADATA_KEYS = frozenset({"_CHECKPOINTABLE_OBJECT_GRAPH"})  # bookkeeping, never model state

    def __init__(self, prefix: Path):
        self.prefix = prefix
        try:
            self.reader = tf.train.load_checkpoint(str(prefix))
        except (tf.errors.OpError, ValueError) as exc:
            raise FormatError(f"cannot open the checkpoint {prefix}: {str(exc).splitlines()[0]}") from None

    def entries(self) -> dict[str, Tensor]:
        shapes = self.reader.get_variable_to_shape_map()
        dtypes = self.reader.get_variable_to_dtype_map()
        return {k: Tensor(tuple(shapes[k]), dtypes[k].name) for k in shapes if k not in self.METADATA_KEYS}

    def read(self, name: str) -> np.ndarray:
        try:
            return self.reader.get_tensor(name)
        except (tf.errors.OpError, IndexError, ValueError) as exc:  # a short read comes back as IndexError
            raise FormatError(f"checkpoint {self.prefix}: cannot read {name!r}: {str(exc).splitlines()[0]}: its "
                              ".data file is truncated or corrupt (copy the checkpoint again)") from None


class ConstantWeights(WeightStore):
    """A frozen graph's weights: the constants its layers read (`weight_constants`), by node name."""

    def __init__(self, graph: tf.Graph):
        self.constants = weight_constants(graph)

    def entries(self) -> dict[str, Tensor]:
        return {name: Tensor(tuple(op.outputs[0].shape.as_list()), op.outputs[0].dtype.name)
                for name, op in self.constants.items()}

    def read(self, name: str) -> np.ndarray:
        return tf.make_ndarray(self.constants[name].get_attr("value"))


def weight_constants(graph: tf.Graph) -> dict[str, tf.Operation]:
    """The `Const` nodes holding a frozen graph's weights, in graph order: float constants that were
    variables (a `<name>/read` identity reads them, as freezing TF1 variables leaves it) or that a layer op
    reads as its weights (`WEIGHT_SLOTS`), through identities and v1 control flow (RNN loops)."""
    found: dict[str, tf.Operation] = {}
    for op in graph.get_operations():
        if op.type != "Const" or not op.outputs[0].dtype.is_floating or not op.outputs[0].shape.rank:
            continue
        frontier, seen = [op], {op.name}
        while frontier and op.name not in found:
            current = frontier.pop()
            for out in current.outputs:
                for user in out.consumers():
                    if user.name in seen:
                        continue
                    seen.add(user.name)
                    if user.type == "Identity" and user.name == f"{op.name}/read":
                        found[op.name] = op
                    elif user.type in VALUE_PASS_OPS:
                        frontier.append(user)
                    elif any(user.inputs[i] is out for i in WEIGHT_SLOTS.get(user.type, ()) if i < len(user.inputs)):
                        found[op.name] = op
    return found


# -- the formats --------------------------------------------------------------------------------------------

def _parse(path: Path, proto: Any, what: str) -> Any:
    """A binary (or text) protobuf file; FormatError naming the file and what it should be otherwise."""
    data = path.read_bytes()
    try:
        proto.ParseFromString(data)
    except message.DecodeError:
        try:
            text_format.Parse(data.decode("utf-8"), proto)
        except (UnicodeDecodeError, text_format.ParseError) as err:
            raise FormatError(f"{path} is not a {what} file (truncated or another format)") from err
    return proto


def read_meta_graph_def(path: Path) -> meta_graph_pb2.MetaGraphDef:
    """Parse a binary (or text) MetaGraphDef; FormatError naming the path otherwise."""
    meta = _parse(path, meta_graph_pb2.MetaGraphDef(), "MetaGraphDef (.meta)")
    if not meta.graph_def.node:
        raise FormatError(f"{path} is not a MetaGraphDef (.meta) file: it holds no graph nodes")
    return meta


def _import(graph: tf.Graph, what: Path, load) -> Any:
    """Run `load()` (an import) into `graph`; name the file when TensorFlow refuses it."""
    try:
        with graph.as_default():
            return load()
    except FormatError:
        raise
    except Exception as err:
        raise FormatError(f"{what}: cannot import the graph: {str(err).splitlines()[0]}") from err


@reader("meta")
class MetaGraphReader(Reader):
    def import_into(self, graph: tf.Graph, source: Source) -> Any:
        meta = read_meta_graph_def(source.meta)
        return _import(graph, source.meta, lambda: tf.compat.v1.train.import_meta_graph(meta, clear_devices=True))


@reader("frozen_graph")
class FrozenGraphReader(Reader):
    def import_into(self, graph: tf.Graph, source: Source) -> None:
        graph_def = _parse(source.frozen_graph, graph_pb2.GraphDef(), "GraphDef (.pb)")
        if not graph_def.node:
            raise FormatError(f"{source.frozen_graph} is not a GraphDef (.pb) file: it holds no graph nodes")
        for node in graph_def.node:
            node.device = ""
        _import(graph, source.frozen_graph, lambda: tf.compat.v1.import_graph_def(graph_def, name=""))

    def weights(self, source: Source, graph: tf.Graph) -> WeightStore:
        return ConstantWeights(graph)

    def load(self, session: tf.compat.v1.Session, source: Source) -> None:
        """The graph alone: its weights are in it."""
        self.import_into(session.graph, source)


@reader("saved_model")
class SavedModelReader(Reader):
    def meta_graph(self, source: Source) -> meta_graph_pb2.MetaGraphDef:
        """The MetaGraph of the spec's tag; FormatError listing the tags present otherwise."""
        folder = source.saved_model
        path = folder / "saved_model.pb" if (folder / "saved_model.pb").exists() else folder / "saved_model.pbtxt"
        saved = _parse(path, saved_model_pb2.SavedModel(), "SavedModel (saved_model.pb)")
        tag = source.saved_model_tag
        for meta in saved.meta_graphs:
            if tag in meta.meta_info_def.tags:
                return meta
        present = [sorted(m.meta_info_def.tags) for m in saved.meta_graphs]
        raise FormatError(f"{folder}: no MetaGraph tagged {tag!r} (source.tag); tag sets present: {present}")

    def import_into(self, graph: tf.Graph, source: Source) -> Any:
        meta = self.meta_graph(source)
        return _import(graph, source.saved_model,
                       lambda: tf.compat.v1.train.import_meta_graph(meta, clear_devices=True))

    def signature(self, source: Source) -> tuple[dict[str, str], dict[str, str]]:
        meta = self.meta_graph(source)
        name = source.saved_model_signature
        if name not in meta.signature_def:
            raise FormatError(f"{source.saved_model}: no signature {name!r} (source.signature) under tag "
                              f"{source.saved_model_tag!r}; signatures present: {sorted(meta.signature_def)}")
        sig = meta.signature_def[name]
        return ({k: v.name for k, v in sig.inputs.items()}, {k: v.name for k, v in sig.outputs.items()})

    def load(self, session: tf.compat.v1.Session, source: Source) -> None:
        """Through the SavedModel's own loader, `tf.compat.v1.saved_model.loader`, as TF Serving would."""
        tags = list(self.meta_graph(source).meta_info_def.tags)
        with session.graph.as_default(), deprecation.silence():  # "use tf.saved_model.load": not for TF1 ones
            tf.compat.v1.saved_model.loader.load(session, tags, str(source.saved_model), clear_devices=True)


@reader("estimator_dir")
class EstimatorDirReader(Reader):
    def import_into(self, graph: tf.Graph, source: Source) -> None:
        path = source.estimator_dir / "graph.pbtxt"
        graph_def = _parse(path, graph_pb2.GraphDef(), "GraphDef (graph.pbtxt)")
        for node in graph_def.node:
            node.device = ""
        _import(graph, path, lambda: tf.compat.v1.import_graph_def(graph_def, name=""))

    def load(self, session: tf.compat.v1.Session, source: Source) -> None:
        """A GraphDef carries no SaverDef: import it, then assign every variable of the graph from the
        checkpoint by name, as the Estimator's own Saver restored them."""
        self.import_into(session.graph, source)
        store = CheckpointWeights(source.checkpoint_prefix)
        keys = store.entries()
        graph = session.graph
        assigns, feeds = [], {}
        with graph.as_default():
            for op in graph.get_operations():
                if op.type not in VARIABLE_OPS or op.name not in keys:
                    continue
                value = store.read(op.name)
                holder = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
                target = op.outputs[0]
                assigns.append(tf.raw_ops.AssignVariableOp(resource=target, value=holder) if op.type == "VarHandleOp"
                               else tf.raw_ops.Assign(ref=target, value=holder))
                feeds[holder] = value
        session.run(assigns, feeds)
