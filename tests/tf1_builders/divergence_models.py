"""The TF1 models tests/test_divergence.py breaks on purpose, built by the example zoo's own script.

    python tests/tf1_builders/divergence_models.py OUT

writes `OUT/resnet_bn/` (convs and batch norms behind an `is_training` switch), `OUT/text_lstm/` (embedding ->
`LSTMCell` in `dynamic_rnn` -> dense) and `OUT/twin_mlp/` (16-32-32-32-4, `dense_1` and `dense_2` with square
[32, 32] kernels), each as zoo/build.py writes a model (checkpoint, `shards/shard-00N.npz`, manifest).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "zoo"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build  # zoo/build.py: the TF1 environment, training, saving, shards
from twin_mlp import build_twin_mlp

if __name__ == "__main__":
    build.MODELS["twin_mlp"] = build_twin_mlp
    sys.exit(build.main(["--out", sys.argv[1], "--only", "resnet_bn", "text_lstm", "twin_mlp"]))
