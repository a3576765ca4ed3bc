"""The TF1 checkpoint variants of tests/test_checkpoint_variants.py: partitions, EMA shadows, float16, bfloat16.

    python tests/tf1_builders/checkpoint_variants.py OUT

trains `x -> emb (partitioned in 3 along axis 0) -> dense -> y` three steps with EMA shadows of `dense`, beside
a float16 `half/kernel` and a bfloat16 `brain/kernel`, and writes the same variables twice:
`OUT/whole/model.ckpt` (the partitioned `emb` saved under its base name, as `Saver` does) and
`OUT/parts/model.ckpt` (saved part by part: keys `emb/part_0..2`); and `OUT/shard.npz` (`x`).
Runs in its own process (tf_keras for `tf.compat.v1.layers`, `disable_v2_behavior`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def main(out: Path) -> None:
    v1.disable_v2_behavior()
    v1.set_random_seed(0)
    x = v1.placeholder(tf.float32, [None, 10], name="x")
    emb = v1.get_variable("emb", [10, 4], partitioner=v1.fixed_size_partitioner(3))
    h = tf.matmul(x, emb)
    y = tf.identity(v1.layers.dense(h, 2), name="y")
    v1.get_variable("half/kernel", [4, 2], dtype=tf.float16)
    v1.get_variable("brain/kernel", [4, 2], dtype=tf.bfloat16)
    loss = tf.reduce_mean(tf.square(y))
    step = v1.train.get_or_create_global_step()
    train = v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=step)
    ema = tf.train.ExponentialMovingAverage(0.5)
    with tf.control_dependencies([train]):
        train_ema = ema.apply(v1.trainable_variables(scope="dense"))
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        for _ in range(3):
            sess.run(train_ema, {x: np.random.RandomState(0).rand(8, 10).astype(np.float32)})
        v1.train.Saver().save(sess, str(out / "whole" / "model.ckpt"))
        parts = {v.name.split(":")[0]: v for v in v1.global_variables() if "emb" in v.name}
        rest = {v.op.name: v for v in v1.global_variables() if "emb" not in v.name}
        v1.train.Saver({**parts, **rest}).save(sess, str(out / "parts" / "model.ckpt"))
        np.savez(out / "shard.npz", x=np.random.RandomState(1).rand(4, 10).astype(np.float32))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
