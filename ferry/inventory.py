"""Inventory of a TF1 `.meta` graph: inputs, candidate outputs, ops, variables, training-only parts.

The graph is imported into its own `tf.Graph`, never the default (eager) context. The result is a
plain JSON-able dict (see `build_inventory`), logged as an artifact and read by later stages.

Every op is classified once, by `classify_ops`, and `is_training_only` is the one predicate used
everywhere after that. Training-only ops are found by name and type (gradients, optimizer and its
slots, save/restore, initializers, summaries, `is_training`/`keep_prob` switches, dropout, state
updates), then by data flow: placeholders that reach no variable are labels, whatever is computed
from labels is loss, and ops that only serve training-only ops follow them. Dropout is training-only
but lies on the inference path (the identity at inference), so feeding dropout counts as feeding
inference. Candidate outputs are heuristics: a spec names its outputs explicitly.
"""

from __future__ import annotations

import ferry  # noqa: F401  (sets TF env defaults before TensorFlow is imported)

import re
import textwrap
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.protobuf import meta_graph_pb2

Classes = dict[str, tuple[str, str]]  # op name -> (training-only category, name root)

PLACEHOLDER_TYPES = frozenset({"Placeholder", "PlaceholderV2", "PlaceholderWithDefault"})
REF_VARIABLE_TYPES = frozenset({"VariableV2", "Variable"})
RESOURCE_VARIABLE_TYPES = frozenset({"VarHandleOp"})
VARIABLE_TYPES = REF_VARIABLE_TYPES | RESOURCE_VARIABLE_TYPES
# Ops a variable's value flows through unchanged on its way to the op that really uses it.
PASS_THROUGH_TYPES = frozenset(
    {"Identity", "RefIdentity", "ReadVariableOp", "Enter", "RefEnter", "Switch", "RefSwitch"}
)
# Ops that are never a model output (structure, bookkeeping, debugging).
NON_OUTPUT_TYPES = PLACEHOLDER_TYPES | VARIABLE_TYPES | frozenset(
    {"Const", "NoOp", "Assert", "Print", "PrintV2", "Shape", "ShapeN", "Size", "Rank"}
)
# Ops whose output carries only the metadata of their input, not its values.
SHAPE_TYPES = frozenset({"Shape", "ShapeN", "Size", "Rank"})
# An unused op of these types computes nothing that matters, e.g. a loss helper's `Shape`.
INERT_TYPES = frozenset(
    {"Const", "Shape", "ShapeN", "Size", "Rank", "NoOp", "Assert", "Print", "PrintV2"}
)
SAVE_TYPES = frozenset(
    {"SaveV2", "RestoreV2", "Save", "SaveSlices", "Restore", "RestoreSlice", "MergeV2Checkpoints",
     "ShardedFilename", "ShardedFilespec"}
)
INIT_TYPES = frozenset({"VarIsInitializedOp", "IsVariableInitialized"})
STATE_UPDATE_TYPES = frozenset(
    {"Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "AssignAddVariableOp",
     "AssignSubVariableOp", "ScatterUpdate", "ScatterAdd", "ScatterSub", "ResourceScatterUpdate",
     "ResourceScatterAdd", "ResourceScatterSub"}
)
APPLY_PREFIXES = ("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply")
CONVERSION_ATTRS = (
    "padding", "explicit_paddings", "strides", "data_format", "dilations", "ksize", "epsilon",
    "is_training", "T", "U", "dtype", "DstT", "SrcT", "transpose_a", "transpose_b", "adj_x",
    "adj_y", "axis", "keep_dims", "alpha", "forget_bias",
)

_GRADIENTS_RE = re.compile(r"gradients(_\d+)?")
_SAVE_RE = re.compile(r"save(_\d+)?")
_INIT_RE = re.compile(r"init(_\d+|_all_tables)?")
_DROPOUT_RE = re.compile(r"dropout(_\d+)?", re.IGNORECASE)
_BETA_POWER_RE = re.compile(r"beta[12]_power(_\d+)?")
_GRAD_SCOPE_RE = re.compile(r"(?:^|/)gradients(?:_\d+)?/(.+?)_grad/")
# Optimizer scopes (`Adam/...`) and slot names (`dense/kernel/Adam_1`).
_OPTIMIZER_RE = re.compile(
    r"(Adam|AdamW|Adamax|Nadam|LazyAdam|Momentum|RMSProp|Adagrad|AdagradDA|ProximalAdagrad|"
    r"Ftrl|Adadelta|GradientDescent|ProximalGradientDescent)(_\d+)?"
)
# Order of the training-only categories in the inventory (and in `format_inventory`).
CATEGORIES = (
    "optimizer", "global_step", "gradients", "summaries", "is_training", "dropout",
    "save_restore", "initializers", "updates", "labels", "loss", "feeds_training",
)
# Categories reported as a count; the others list distinct names (scope roots).
COUNTED = frozenset({"gradients", "save_restore", "initializers", "loss", "feeds_training"})


# ---------------------------------------------------------------------------------- loading


def load_graph(meta_path: str | Path) -> tf.Graph:
    """Import a `.meta` file into a fresh `tf.Graph` (devices cleared) and return it."""
    path = Path(meta_path)
    if not path.is_file():
        raise FileNotFoundError(f"meta graph not found: {path}")
    meta = _read_meta_graph_def(path)
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
    except Exception as err:  # unknown op types, corrupt nodes, ...
        raise ValueError(f"{path}: cannot import the graph: {err}") from err
    return graph


def _read_meta_graph_def(path: Path) -> meta_graph_pb2.MetaGraphDef:
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


# ---------------------------------------------------------------------------- classification

Users = dict[str, list[tf.Operation]]  # op name -> ops using it


def users_of(graph: tf.Graph) -> tuple[Users, Users]:
    """(data users, all users) of each op: ops reading its outputs, plus control dependants."""
    data: Users = defaultdict(list)
    every: Users = defaultdict(list)
    for op in graph.get_operations():
        for name in dict.fromkeys(t.op.name for t in op.inputs):
            data[name].append(op)
        producers = [t.op.name for t in op.inputs] + [c.name for c in op.control_inputs]
        for name in dict.fromkeys(producers):
            every[name].append(op)
    return data, every


def _first_match(parts: list[str], pattern: re.Pattern[str]) -> int | None:
    """Index of the first name component fully matching `pattern`, or None."""
    return next((i for i, part in enumerate(parts) if pattern.fullmatch(part)), None)


def _direct_category(
    op: tf.Operation, train_ops: frozenset[str], step_names: frozenset[str]
) -> tuple[str, str] | None:
    """(category, root) when the op's own name or type marks it training-only, else None."""
    name, parts, kind = op.name, op.name.split("/"), op.type
    if _first_match(parts, _GRADIENTS_RE) is not None:
        return "gradients", name
    if _SAVE_RE.fullmatch(parts[0]) or kind in SAVE_TYPES:
        return "save_restore", name
    if "Summary" in kind:
        return "summaries", name
    if parts[0] in step_names or parts[0] == "global_step":
        return "global_step", parts[0]
    if _BETA_POWER_RE.fullmatch(parts[0]):
        return "optimizer", parts[0]
    if (i := _first_match(parts, _OPTIMIZER_RE)) is not None:
        return "optimizer", "/".join(parts[: i + 1])
    for train_op in train_ops:
        if name == train_op or name.startswith(train_op + "/"):
            return "optimizer", train_op
    if kind.startswith(APPLY_PREFIXES):
        return "optimizer", name
    if (
        _INIT_RE.fullmatch(name)
        or "Initializer" in parts
        or parts[0] == "report_uninitialized_variables"
        or kind in INIT_TYPES
        or (len(parts) > 1 and parts[-1] == "initial_value")
        or (len(parts) > 1 and parts[-1] == "Assign" and kind.startswith("Assign"))
    ):
        return "initializers", name
    if kind in PLACEHOLDER_TYPES and op.outputs[0].dtype == tf.bool:
        return "is_training", name
    if (i := _first_match(parts, _DROPOUT_RE)) is not None:
        return "dropout", "/".join(parts[: i + 1])
    if kind in STATE_UPDATE_TYPES:
        return "updates", name
    return None


def _collection_op_names(graph: tf.Graph, key: str) -> frozenset[str]:
    """Op names of a graph collection's items (variables, tensors or ops); empty if absent."""
    names = set()
    for item in graph.get_collection(key):
        op = getattr(item, "op", item)
        if isinstance(op, tf.Operation):
            names.add(op.name)
    return frozenset(names)


def _is_inert_sink(op: tf.Operation, users: Users) -> bool:
    """A `Shape`/`NoOp`/assert-like op that nothing uses (e.g. a loss helper's `Shape`)."""
    return op.type in INERT_TYPES and not users.get(op.name)


def on_inference_path(op: tf.Operation, classes: Classes) -> bool:
    """An inference op, or dropout (training-only, but the identity at inference)."""
    return op.name not in classes or classes[op.name][0] == "dropout"


def feeds_inference(user: tf.Operation, classes: Classes, users: Users) -> bool:
    """Whether an edge into `user` carries a value inference needs."""
    return on_inference_path(user, classes) and not _is_inert_sink(user, users)


def is_training_only(op_name: str, classes: Classes) -> bool:
    """The one predicate: is this op training-only (see `classify_ops`)?"""
    return op_name in classes


def classify_ops(graph: tf.Graph, data_users: Users, users: Users) -> Classes:
    """Classify every training-only op: op name -> (category, root). Other ops are inference ops.

    1. By the op's own name and type (`_direct_category`); a scalar placeholder that only feeds
       dropout (`keep_prob`) is an `is_training` switch too.
    2. Inputs are the placeholders that reach an op reading a variable; the other placeholders are
       `labels`, and everything computed from labels is `loss`, as are the `losses` collection and
       the most downstream op that `tf.gradients` differentiated.
    3. Until nothing changes, an op whose users are all training-only becomes `feeds_training`
       (loss reductions, moving-average arithmetic, summary tags), and so does an unused op fed only
       by training-only ops. An op computed from the inputs is kept when it feeds a `loss` op: it
       is a model output that only the loss reads.
    """
    train_ops = _collection_op_names(graph, tf.compat.v1.GraphKeys.TRAIN_OP)
    step_names = _collection_op_names(graph, tf.compat.v1.GraphKeys.GLOBAL_STEP)
    ops = graph.get_operations()
    classes: Classes = {}
    for op in ops:
        if category := _direct_category(op, train_ops, step_names):
            classes[op.name] = category
    classes.update(_switch_placeholders(ops, classes, users))

    inputs = _input_placeholders(ops, classes, data_users)
    labels = [op for op in ops if op.type in PLACEHOLDER_TYPES and op.name not in classes
              and op.name not in inputs]
    for op in labels:
        classes[op.name] = ("labels", op.name)
    loss_heads = _collection_op_names(graph, tf.compat.v1.GraphKeys.LOSSES)
    loss_heads |= _differentiated_heads(graph, data_users)
    heads = [graph.get_operation_by_name(name) for name in sorted(loss_heads)]
    for op in _descendants(labels, classes, data_users) + heads:
        classes.setdefault(op.name, ("loss", op.name))

    input_ops = [op for op in ops if op.name in inputs]
    trunk = {op.name for op in _descendants(input_ops, classes, data_users)}
    _absorb_feeders(ops, classes, users, trunk)
    return classes


def _switch_placeholders(
    ops: list[tf.Operation], classes: Classes, users: Users
) -> Classes:
    """Scalar (or unknown-rank) placeholders whose value only reaches dropout ops (`keep_prob`),
    with the helper ops in between (e.g. `sub = 1 - keep_prob`), as `is_training` switches."""
    found: Classes = {}
    for op in ops:
        if op.type not in PLACEHOLDER_TYPES or op.name in classes:
            continue
        if op.outputs[0].shape.rank in (None, 0):
            helpers = _only_reaches_dropout(op, classes, users)
            if helpers is not None:
                found.update({name: ("is_training", op.name) for name in [op.name, *helpers]})
    return found


def _only_reaches_dropout(
    start: tf.Operation, classes: Classes, users: Users
) -> list[str] | None:
    """The inference ops between `start` and the dropout ops it feeds, or None when its value
    also ends anywhere else (an op nothing uses, or the model itself)."""
    helpers: dict[str, None] = {}
    reached_dropout = False
    stack = [start]
    while stack:
        live = [u for u in users.get(stack.pop().name, []) if not _is_inert_sink(u, users)]
        if not live:
            return None  # a dead end that is not dropout: maybe an output
        for user in live:
            if user.name in helpers:
                continue
            if user.name in classes:  # dropout, or a training-only user that inference ignores
                reached_dropout |= classes[user.name][0] == "dropout"
                continue
            if len(helpers) >= 16:  # switch helpers are a few scalar ops; this is the model
                return None
            helpers[user.name] = None
            stack.append(user)
    return list(helpers) if reached_dropout else None


def _input_placeholders(
    ops: list[tf.Operation], classes: Classes, data_users: Users
) -> set[str]:
    """Placeholders from which an inference op reading a variable can be reached.

    With no such reader (a graph without variables), every placeholder not yet classified.
    """
    readers: list[tf.Operation] = []
    for var in (op for op in ops if op.type in VARIABLE_TYPES):
        readers += variable_readers(var, classes, data_users)[0]
    free = {op.name for op in ops if op.type in PLACEHOLDER_TYPES and op.name not in classes}
    if not readers:
        return free
    return free & _ancestors(readers)


def _ancestors(starts: list[tf.Operation]) -> set[str]:
    """Names of the ops the given ops depend on through data edges."""
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        for tensor in stack.pop().inputs:
            if tensor.op.name not in seen:
                seen.add(tensor.op.name)
                stack.append(tensor.op)
    return seen


def _descendants(
    starts: list[tf.Operation], classes: Classes, data_users: Users
) -> list[tf.Operation]:
    """Ops computed from the given ones through inference ops (and dropout), in visit order."""
    seen = {op.name for op in starts}
    order: list[tf.Operation] = []
    stack = list(starts)
    while stack:
        for user in data_users.get(stack.pop().name, []):
            if user.name in seen or not on_inference_path(user, classes):
                continue
            seen.add(user.name)
            order.append(user)
            stack.append(user)
    return order


def _differentiated_heads(graph: tf.Graph, data_users: Users) -> frozenset[str]:
    """Ops `tf.gradients` differentiated (a `gradients/<op>_grad/` scope) that feed no other such
    op, directly or through ops in between: the losses that were minimised."""
    differentiated = set()
    for op in graph.get_operations():
        match = _GRAD_SCOPE_RE.search(op.name)
        if match and not _GRADIENTS_RE.fullmatch(match.group(1).split("/")[0]):
            differentiated.add(match.group(1))
    # An op feeds the loss when any op downstream of it (transitively: ops without a gradient
    # scope of their own, like `Identity`, sit in between) was differentiated too.
    feeds_differentiated: set[str] = set()
    ops = graph.get_operations()
    for op in reversed(ops):
        if any(u.name in differentiated or u.name in feeds_differentiated for u in data_users.get(op.name, [])):
            feeds_differentiated.add(op.name)
    existing = {op.name for op in ops}
    return frozenset(differentiated & existing - feeds_differentiated)


def _absorb_feeders(
    ops: list[tf.Operation], classes: Classes, users: Users, trunk: set[str]
) -> None:
    """Mark `feeds_training` ops (see `classify_ops`, step 3) in place, until nothing changes."""
    changed = True
    while changed:
        changed = False
        for op in reversed(ops):
            if op.name not in classes and _only_serves_training(op, classes, users, trunk):
                classes[op.name] = ("feeds_training", op.name)
                changed = True


def _only_serves_training(
    op: tf.Operation, classes: Classes, users: Users, trunk: set[str]
) -> bool:
    """Whether every user of `op` is training-only (or, when unused, every producer is)."""
    live = [u for u in users.get(op.name, []) if not _is_inert_sink(u, users)]
    if not live:
        producers = [t.op for t in op.inputs] + list(op.control_inputs)
        return bool(producers) and not any(on_inference_path(p, classes) for p in producers)
    if any(feeds_inference(u, classes, users) for u in live):
        return False
    return not (op.name in trunk and any(classes[u.name][0] == "loss" for u in live))


# ------------------------------------------------------------------------------- conversions


def dtype_name(dtype: Any) -> str:
    """Base dtype name, e.g. `float32` (also for `float32_ref`)."""
    return tf.as_dtype(dtype).base_dtype.name


def shape_list(shape: Any) -> list[int | None] | None:
    """A TensorShape (or proto) as a list with None for unknown dims; None for unknown rank."""
    shape = tf.TensorShape(shape)
    return None if shape.rank is None else shape.as_list()


def _json_attr(value: Any) -> Any:
    """An op attr value as JSON: bytes -> str, dtype -> name, float32 -> shortest decimal."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, tf.DType):
        return dtype_name(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(str(np.float32(value)))  # attrs are float32: 0.001, not 0.0010000000474...
    if isinstance(value, (list, tuple)):
        return [_json_attr(v) for v in value]
    if hasattr(value, "dim"):  # TensorShapeProto
        return shape_list(value)
    return str(value)


def conversion_attrs(op: tf.Operation) -> dict[str, Any]:
    """The attrs that matter for conversion (`CONVERSION_ATTRS`), JSON-able, when present."""
    present = op.node_def.attr
    return {key: _json_attr(op.get_attr(key)) for key in CONVERSION_ATTRS if key in present}


def tensor_ref(tensor: tf.Tensor) -> str:
    """GraphDef-style input name: `op` for output 0, `op:k` otherwise."""
    index = tensor.value_index
    return tensor.op.name if index == 0 else f"{tensor.op.name}:{index}"


# --------------------------------------------------------------------------------- sections


def variable_readers(
    var: tf.Operation, classes: Classes, data_users: Users
) -> tuple[list[tf.Operation], list[tf.Operation]]:
    """(readers, reads) of a variable: the inference ops really using its value, and the ops
    it flows through to them (`…/read`, `ReadVariableOp`, control flow: `PASS_THROUGH_TYPES`)."""
    readers: list[tf.Operation] = []
    reads: list[tf.Operation] = []
    frontier = [var]
    seen = {var.name}
    while frontier:
        for user in data_users.get(frontier.pop(0).name, []):
            if user.name in seen or is_training_only(user.name, classes):
                continue
            seen.add(user.name)
            if user.type in PASS_THROUGH_TYPES:
                reads.append(user)
                frontier.append(user)
            else:
                readers.append(user)
    return readers, reads


def variable_entry(
    var: tf.Operation, read_by: list[str], classes: Classes, trainable: frozenset[str]
) -> dict[str, Any]:
    """One `variables` item."""
    return {
        "name": var.name,
        "shape": shape_list(var.get_attr("shape")),
        "dtype": dtype_name(var.get_attr("dtype")),
        "kind": "resource" if var.type in RESOURCE_VARIABLE_TYPES else "reference",
        "trainable": var.name in trainable,
        "training_only": is_training_only(var.name, classes) or not read_by,
        "read_by": read_by,
    }


def placeholder_entry(op: tf.Operation) -> dict[str, Any]:
    """One `placeholders` item."""
    out = op.outputs[0]
    return {
        "name": op.name,
        "tensor": out.name,
        "dtype": dtype_name(out.dtype),
        "shape": shape_list(out.shape),
        "has_default": op.type == "PlaceholderWithDefault",
    }


def op_entry(op: tf.Operation) -> dict[str, Any]:
    """One `ops` item."""
    return {
        "name": op.name,
        "type": op.type,
        "inputs": [tensor_ref(t) for t in op.inputs],
        "attrs": conversion_attrs(op),
    }


def is_candidate_output(
    op: tf.Operation, classes: Classes, users: Users, read_ops: set[str]
) -> bool:
    """An inference op with a numeric first output that no inference op uses (see also the
    input-value check in `build_inventory`)."""
    if is_training_only(op.name, classes) or op.type in NON_OUTPUT_TYPES or op.name in read_ops:
        return False
    if not op.outputs or not (op.outputs[0].dtype.is_floating or op.outputs[0].dtype.is_integer):
        return False
    return not any(feeds_inference(u, classes, users) for u in users.get(op.name, []))


def placeholder_ancestors(
    op: tf.Operation, placeholders: set[str], values_only: bool = False
) -> list[str]:
    """Names of the given placeholders that `op` depends on (data edges), sorted. With
    `values_only`, a dependency through `Shape`-like ops (metadata, not values) does not count."""
    found: set[str] = set()
    seen = {op.name}
    stack = [op]
    while stack:
        for tensor in stack.pop().inputs:
            producer = tensor.op
            if producer.name in seen or (values_only and producer.type in SHAPE_TYPES):
                continue
            seen.add(producer.name)
            if producer.name in placeholders:
                found.add(producer.name)
            stack.append(producer)
    return sorted(found)


def output_entry(op: tf.Operation, placeholders: set[str]) -> dict[str, Any]:
    """One `outputs` item; `depends_on` lists the inference placeholders it needs."""
    out = op.outputs[0]
    return {
        "name": op.name,
        "tensor": out.name,
        "op": op.type,
        "dtype": dtype_name(out.dtype),
        "shape": shape_list(out.shape),
        "depends_on": placeholder_ancestors(op, placeholders),
    }


def training_summary(classes: Classes) -> dict[str, Any]:
    """Per category: a count (`COUNTED`) or the distinct name roots, in graph order."""
    roots: dict[str, dict[str, None]] = {c: {} for c in CATEGORIES}
    for category, root in classes.values():
        roots[category][root] = None
    counts = Counter(category for category, _ in classes.values())
    return {c: counts[c] if c in COUNTED else list(roots[c]) for c in CATEGORIES}


# ----------------------------------------------------------------------------------- public


def build_inventory(meta_path: str | Path) -> dict[str, Any]:
    """Inventory of a `.meta` graph as a JSON-able dict.

    Keys: `meta`, `placeholders`, `outputs` (candidate outputs), `variables`, `ops` (inference
    ops), `op_types` (counts over `ops`), `training_only` (per category, see `CATEGORIES`).
    """
    graph = load_graph(meta_path)
    ops = graph.get_operations()
    data_users, users = users_of(graph)
    classes = classify_ops(graph, data_users, users)
    trainable = _collection_op_names(graph, tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)

    variables, read_ops = [], set()
    for var in (op for op in ops if op.type in VARIABLE_TYPES):
        readers, reads = variable_readers(var, classes, data_users)
        read_ops.update(op.name for op in reads)
        variables.append(variable_entry(var, [op.name for op in readers], classes, trainable))

    inference = [op for op in ops if not is_training_only(op.name, classes)]
    placeholders = [op for op in inference if op.type in PLACEHOLDER_TYPES]
    placeholder_names = {op.name for op in placeholders}
    outputs = [op for op in inference if is_candidate_output(op, classes, users, read_ops)]
    if placeholder_names:  # an output computes on input values, not only on their shapes
        outputs = [op for op in outputs if placeholder_ancestors(op, placeholder_names, True)]
    counts = Counter(op.type for op in inference)
    return {
        "meta": str(meta_path),
        "placeholders": [placeholder_entry(op) for op in placeholders],
        "outputs": [output_entry(op, placeholder_names) for op in outputs],
        "variables": variables,
        "ops": [op_entry(op) for op in inference],
        "op_types": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "training_only": training_summary(classes),
    }


# ------------------------------------------------------------------------------- formatting

WIDTH = 100


def _fit(text: str, width: int) -> str:
    """Shorten `text` to `width` characters, keeping its end (names differ at the end)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _shape_text(shape: list[int | None] | None) -> str:
    """`[?, 784]`-style shape; `?` alone for unknown rank."""
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _table(rows: list[list[str]], caps: list[int], indent: str = "  ") -> list[str]:
    """Left-aligned columns, each at most its cap wide; the last column gets what is left of
    WIDTH. Over-long cells are shortened from the left (names differ at their end)."""
    if not rows:
        return []
    widths = [min(cap, max(len(r[i]) for r in rows)) for i, cap in enumerate(caps[:-1])]
    last = max(8, WIDTH - len(indent) - sum(w + 2 for w in widths))
    lines = []
    for row in rows:
        cells = [_fit(cell, w).ljust(w) for cell, w in zip(row, widths)] + [_fit(row[-1], last)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _names(names: list[str], limit: int = 4) -> str:
    """A few names, then `+N more`."""
    shown = ", ".join(names[:limit])
    return shown + (f", +{len(names) - limit} more" if len(names) > limit else "")


def _first_and_count(names: list[str]) -> str:
    """`first (+N)` for a table cell; `-` when empty."""
    if not names:
        return "-"
    return names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")


def _wrapped(label: str, text: str) -> list[str]:
    """`label` then `text` wrapped to WIDTH, continuation lines indented under the text."""
    pad = " " * len(label)
    return textwrap.wrap(text, WIDTH, initial_indent=label, subsequent_indent=pad) or [label]


def format_inventory(inv: dict[str, Any]) -> str:
    """Human-readable summary of an inventory, for `ferry inspect META` (fits 100 columns)."""
    lines = [f"Graph: {inv['meta']}", ""]
    lines += _inputs_lines(inv) + [""] + _outputs_lines(inv) + [""] + _variables_lines(inv)
    lines += ["", f"Op types ({sum(inv['op_types'].values())} inference ops):"]
    lines += _wrapped("  ", ", ".join(f"{t} {n}" for t, n in inv["op_types"].items()))
    return "\n".join(lines + [""] + _training_lines(inv))


def _inputs_lines(inv: dict[str, Any]) -> list[str]:
    """The `Inputs` section."""
    rows = [[p["tensor"], p["dtype"], _shape_text(p["shape"]),
             "(has default)" if p.get("has_default") else ""] for p in inv["placeholders"]]
    return [f"Inputs ({len(rows)}):"] + (_table(rows, [48, 10, 24, 0]) or ["  (none)"])


def _outputs_lines(inv: dict[str, Any]) -> list[str]:
    """The `Candidate outputs` section."""
    rows = [[o["tensor"], o["op"], o["dtype"], _shape_text(o["shape"]),
             "from " + ", ".join(o["depends_on"]) if o.get("depends_on") else ""]
            for o in inv["outputs"]]
    table = _table(rows, [40, 16, 8, 16, 0]) or ["  (none)"]
    return [f"Candidate outputs ({len(rows)}):"] + table


def _variables_lines(inv: dict[str, Any]) -> list[str]:
    """The `Variables` section: a table of those inference reads, then the training-only ones."""
    used = [v for v in inv["variables"] if not v["training_only"]]
    skipped = [v["name"] for v in inv["variables"] if v["training_only"]]
    lines = [f"Variables ({len(used)} used by inference, {len(skipped)} training-only):"]
    rows = [[v["name"], _shape_text(v["shape"]), v["dtype"], v["kind"],
             _first_and_count(v["read_by"])] for v in used]
    header = ["name", "shape", "dtype", "kind", "read by"]
    lines += _table([header] + rows, [40, 18, 8, 9, 0]) if rows else ["  (none)"]
    if skipped:
        lines += _wrapped("  training-only: ", _names(skipped, 6))
    return lines


def _training_lines(inv: dict[str, Any]) -> list[str]:
    """The `Training-only parts` section: a count or a few names per non-empty category."""
    lines = ["Training-only parts:"]
    for key, value in inv["training_only"].items():
        if value:
            text = f"{value} ops" if isinstance(value, int) else _names(value)
            lines += _wrapped(f"  {key + ':':<16}", text)
    return lines if len(lines) > 1 else lines + ["  (none)"]
