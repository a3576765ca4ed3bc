"""Facts about TF1 graphs and checkpoints that several parts of ferry need, each defined once, without
TensorFlow: the optimizers' slot names, EMA shadows, partitions, the ops a value passes through
unchanged, and how a float32 attribute reads as a number.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# The TF1 optimizers (tf.compat.v1.train.*Optimizer and contrib's). Each names its scope in the graph
# (`Adam/update_dense/kernel/ApplyAdam`) and its slot variables after itself: `dense/kernel/Adam`,
# `dense/kernel/Adam_1`, `rnn/lstm_cell/kernel/Adagrad`, `…/Ftrl_1`.
OPTIMIZERS = ("Adam", "AdamW", "Adamax", "Nadam", "LazyAdam", "Momentum", "RMSProp", "Adagrad", "AdagradDA",
              "ProximalAdagrad", "Adadelta", "Ftrl", "GradientDescent", "ProximalGradientDescent")
OPTIMIZER_PART = re.compile(rf"(?:{'|'.join(OPTIMIZERS)})(?:_\d+)?")  # one name component
BETA_POWER = re.compile(r"beta[12]_power(?:_\d+)?")  # Adam's accumulators, at the top level
GLOBAL_STEP = "global_step"

EMA_SUFFIX = "/ExponentialMovingAverage"  # an ExponentialMovingAverage shadow of the variable before it
PARTITION = re.compile(r"(.+)/part_(\d+)")  # a partitioned variable's piece: base name, index

# Op types of TF1 graphs, by name (the TensorFlow side matches `op.type` against these).
PLACEHOLDER_OPS = frozenset({"Placeholder", "PlaceholderV2", "PlaceholderWithDefault"})
REF_VARIABLE_OPS = frozenset({"VariableV2", "Variable"})
RESOURCE_VARIABLE_OPS = frozenset({"VarHandleOp"})
VARIABLE_OPS = REF_VARIABLE_OPS | RESOURCE_VARIABLE_OPS
IDENTITY_OPS = frozenset({"Identity", "RefIdentity", "StopGradient", "Snapshot", "PreventGradient"})
CONTROL_FLOW_PASS_OPS = frozenset({"Enter", "RefEnter", "Switch", "RefSwitch", "Merge", "RefMerge"})
# What a variable's value flows through unchanged on its way to the op that uses it (`…/read`, a
# resource read, v1 control flow of a while loop or a cond).
VALUE_PASS_OPS = IDENTITY_OPS | CONTROL_FLOW_PASS_OPS | {"ReadVariableOp"}


def is_optimizer_slot(name: str) -> bool:
    """Whether a variable (checkpoint key) is optimizer state: a slot (`…/Adam_1`), a beta power, the
    global step."""
    parts = name.split("/")
    return (any(OPTIMIZER_PART.fullmatch(part) for part in parts[1:]) or bool(BETA_POWER.fullmatch(parts[-1]))
            or parts[-1] == GLOBAL_STEP)


def optimizer_skip_patterns() -> list[str]:
    """Checkpoint-key regexes of optimizer state (the name map's `optimizer` skip preset)."""
    return [rf".*/{OPTIMIZER_PART.pattern}", rf"(?:.*/)?{BETA_POWER.pattern}", rf"(?:.*/)?{GLOBAL_STEP}"]


def float32(value: Any) -> float:
    """A float32 attribute or constant as the number it was written as (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))
