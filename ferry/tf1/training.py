"""Which ops of a TF1 graph serve training only, found once (`classify_ops`) and asked one way after
that (`is_training_only`).

Training-only ops are found by name and type (gradients, optimizer and its slots, save/restore,
initializers, summaries, `is_training`/`keep_prob` switches, dropout, state updates), then by data
flow: placeholders that reach no variable are labels, whatever is computed from labels is loss, and
ops that only serve training-only ops follow them. Dropout is training-only but lies on the inference
path (the identity at inference), so feeding dropout counts as feeding inference.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import tensorflow as tf

from ferry.facts import BETA_POWER, OPTIMIZER_PART, PLACEHOLDER_OPS, VALUE_PASS_OPS, VARIABLE_OPS

Classes = dict[str, tuple[str, str]]  # op name -> (training-only category, name root)

# Ops of an input pipeline whose outputs feed a model that has no placeholders (an Estimator's graph).
PIPELINE_TYPES = frozenset({"IteratorGetNext", "ParseExample", "ParseExampleV2", "ParseSingleExample"})

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
_GRADIENTS_RE = re.compile(r"gradients(_\d+)?")
_SAVE_RE = re.compile(r"save(_\d+)?")
_INIT_RE = re.compile(r"init(_\d+|_all_tables)?")
_DROPOUT_RE = re.compile(r"dropout(_\d+)?", re.IGNORECASE)
_GRAD_SCOPE_RE = re.compile(r"(?:^|/)gradients(?:_\d+)?/(.+?)_grad/")
# Order of the training-only categories in the inventory (and in `format_inventory`).
CATEGORIES = (
    "optimizer", "global_step", "gradients", "summaries", "is_training", "dropout",
    "save_restore", "initializers", "updates", "labels", "loss", "feeds_training",
)
# Categories reported as a count; the others list distinct names (scope roots).
COUNTED = frozenset({"gradients", "save_restore", "initializers", "loss", "feeds_training"})


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
    if BETA_POWER.fullmatch(parts[0]):
        return "optimizer", parts[0]
    if (i := _first_match(parts, OPTIMIZER_PART)) is not None:
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
    if kind in PLACEHOLDER_OPS and op.outputs[0].dtype == tf.bool:
        return "is_training", name
    if (i := _first_match(parts, _DROPOUT_RE)) is not None:
        return "dropout", "/".join(parts[: i + 1])
    if kind in STATE_UPDATE_TYPES:
        return "updates", name
    return None


def collection_op_names(graph: tf.Graph, key: str) -> frozenset[str]:
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
    train_ops = collection_op_names(graph, tf.compat.v1.GraphKeys.TRAIN_OP)
    step_names = collection_op_names(graph, tf.compat.v1.GraphKeys.GLOBAL_STEP)
    ops = graph.get_operations()
    classes: Classes = {}
    for op in ops:
        if category := _direct_category(op, train_ops, step_names):
            classes[op.name] = category
    classes.update(_switch_placeholders(ops, classes, users))

    inputs = _input_placeholders(ops, classes, data_users)
    labels = [op for op in ops if op.type in PLACEHOLDER_OPS and op.name not in classes
              and op.name not in inputs]
    for op in labels:
        classes[op.name] = ("labels", op.name)
    loss_heads = collection_op_names(graph, tf.compat.v1.GraphKeys.LOSSES)
    loss_heads |= _differentiated_heads(graph, data_users)
    heads = [graph.get_operation_by_name(name) for name in sorted(loss_heads)]
    label_users = _pipeline_label_users(ops, classes, data_users)
    for op in label_users + _descendants(labels + label_users, classes, data_users) + heads:
        classes.setdefault(op.name, ("loss", op.name))

    input_ops = [op for op in ops if op.name in inputs or op.type in PIPELINE_TYPES]  # an Estimator: its iterator
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
        if op.type not in PLACEHOLDER_OPS or op.name in classes:
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
    for var in (op for op in ops if op.type in VARIABLE_OPS):
        readers += variable_readers(var, classes, data_users)[0]
    free = {op.name for op in ops if op.type in PLACEHOLDER_OPS and op.name not in classes}
    if not readers:
        return free
    return free & _ancestors(readers)


def _pipeline_label_users(ops: list[tf.Operation], classes: Classes, data_users: Users) -> list[tf.Operation]:
    """The ops reading an input pipeline's outputs that reach no op reading a variable (an Estimator's
    labels, `IteratorGetNext:1`): they compute the loss, as ops of label placeholders do."""
    readers = [r for var in ops if var.type in VARIABLE_OPS for r in variable_readers(var, classes, data_users)[0]]
    feeding: set[str] = set()  # tensors the model's variable readers depend on
    stack = list(readers)
    while stack:
        for tensor in stack.pop().inputs:
            if tensor.name not in feeding:
                feeding.add(tensor.name)
                stack.append(tensor.op)
    return [user for op in ops if op.type in PIPELINE_TYPES for out in op.outputs if out.name not in feeding
            for user in out.consumers() if on_inference_path(user, classes)]


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


def variable_readers(
    var: tf.Operation, classes: Classes, data_users: Users
) -> tuple[list[tf.Operation], list[tf.Operation]]:
    """(readers, reads) of a variable: the inference ops really using its value, and the ops
    it flows through to them (`…/read`, `ReadVariableOp`, control flow: `VALUE_PASS_OPS`)."""
    readers: list[tf.Operation] = []
    reads: list[tf.Operation] = []
    frontier = [var]
    seen = {var.name}
    while frontier:
        for user in data_users.get(frontier.pop(0).name, []):
            if user.name in seen or is_training_only(user.name, classes):
                continue
            seen.add(user.name)
            if user.type in VALUE_PASS_OPS:
                reads.append(user)
                frontier.append(user)
            else:
                readers.append(user)
    return readers, reads


def training_summary(classes: Classes) -> dict[str, Any]:
    """Per category: a count (`COUNTED`) or the distinct name roots, in graph order."""
    roots: dict[str, dict[str, None]] = {c: {} for c in CATEGORIES}
    for category, root in classes.values():
        roots[category][root] = None
    counts = Counter(category for category, _ in classes.values())
    return {c: counts[c] if c in COUNTED else list(roots[c]) for c in CATEGORIES}
