"""`architecture: auto`: rebuild a Keras model from the TF1 graph itself.

The inference subgraph between the spec's inputs and outputs is walked from the outputs back
(`core.Translator`). Control flow with a constant predicate (`is_training` switches,
`PlaceholderWithDefault`) is folded away; `Identity`/`read` ops are looked through. Each op is translated by
the handler registered for its type with `@handles` (`registry.py`), by family: `nn.py` (layers with weights,
pooling, padding), `math.py` (elementwise, matmul, einsum, reductions, casts), `array.py` (shape ops, slices),
`indexing.py` (fill, range, one-hot, where, gathers, top-k), `vision.py` (resizing, depth/space, LRN);
`values.py` holds what they share (shape arithmetic evaluated at translation, nodes for constants and
variables). Patterns that need look-ahead (a `BiasAdd` on its conv, `tf.layers.dense`'s tensordot,
`dynamic_rnn`'s loop in `rnn.py`, GELU and `l2_normalize` written op by op, an einsum's bias) are the ordered
`fusions.FUSIONS`, tried first. Layers are named after their TF1 scope (`/` becomes `.`, which Keras names
allow). The result is a spec `graph` architecture plus exact name-map rules binding every variable the graph
reads, so coverage is complete by construction.

Adding an op: one function decorated with `@handles("OpType")` in its family's module, a case in a
`tests/tf1_builders/auto_ops*.py` builder, and its op type in the README's table.
"""

from __future__ import annotations

from ferry.tf1.auto import array, indexing, math, nn, rnn, vision  # noqa: F401  (the families register their handlers)
from ferry.tf1.auto.core import FOLDED, Translation, Translator, UnsupportedGraph, translate, unsupported_ops
from ferry.tf1.auto.fusions import FUSIONS
from ferry.tf1.auto.registry import HANDLERS, Unsupported, handles, layer_name

# Op types a handler or a fusion translates, and all those `auto` accepts (these plus FOLDED).
REGISTERED: frozenset[str] = frozenset(HANDLERS).union(*({f.root} | f.over for f in FUSIONS))
SUPPORTED: list[str] = sorted(REGISTERED | FOLDED)

__all__ = ["FOLDED", "FUSIONS", "HANDLERS", "REGISTERED", "SUPPORTED", "Translation", "Translator", "Unsupported",
           "UnsupportedGraph", "handles", "layer_name", "translate", "unsupported_ops"]
