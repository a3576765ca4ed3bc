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


def cases_in(namespace: dict) -> dict:
    """A builder module's cases: its `case_<name>(rng)` functions, by name."""
    return {name.removeprefix("case_"): fn for name, fn in namespace.items() if name.startswith("case_")}


def write_cases(cases: dict, out: Path) -> None:
    """Write one model folder per case (`out/<case>/`): each case builds its graph in the default graph and
    returns (inputs, outputs, shard); variables keep their random initial values (a translation needs no
    training), and every case has a checkpoint, even one without weights (a global step)."""
    for name, build in cases.items():
        graph = tf.Graph()
        with graph.as_default():
            v1.set_random_seed(0)
            v1.train.get_or_create_global_step()
            inputs, outputs, shard = build(np.random.RandomState(0))
            outputs = {key: tf.identity(tensor, name=f"out_{key}") for key, tensor in outputs.items()}
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                save_model(out / name, sess, inputs, outputs, [shard])
