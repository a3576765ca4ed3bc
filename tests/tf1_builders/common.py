"""What the TF1 builders here share: TF1-era graphs (`tf_keras` behind `tf.compat.v1.layers`, v2 behaviour
off) and one way to write a model folder. Each builder takes `tf` from here, so the environment is set
before TensorFlow loads; never imported by a test process."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_v2_behavior()
tf.get_logger().setLevel("ERROR")  # tf.compat.v1's deprecation notices are expected here
warnings.filterwarnings("ignore", message=r"`tf\.(layers|nn\.rnn_cell)\.\w+` is deprecated", category=UserWarning)
v1 = tf.compat.v1


def save_model(folder: Path, sess: v1.Session, inputs: dict[str, tf.Tensor], outputs: dict[str, tf.Tensor],
               shards: list[dict[str, np.ndarray]]) -> None:
    """Write `folder/`: `model.ckpt.*` (its meta graph too), `shards/shard-00N.npz` and `manifest.json`
    (`inputs`, `outputs`: serving name -> tensor name)."""
    (folder / "shards").mkdir(parents=True)
    v1.train.Saver().save(sess, str(folder / "model.ckpt"), write_state=False)
    for i, arrays in enumerate(shards):
        np.savez(folder / "shards" / f"shard-{i:03d}.npz", **arrays)
    manifest = {"inputs": {k: t.name for k, t in inputs.items()}, "outputs": {k: t.name for k, t in outputs.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
