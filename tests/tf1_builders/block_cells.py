"""`tf.contrib.rnn`'s fused cells as TF 2.21 still builds them: contrib is gone, its kernels are not. Each
class here is contrib's, cut to inference: the same variables under the same scope names (`lstm_cell/kernel`,
`bias`, `w_*_diag`; `gru_cell/w_ru`, `b_ru`, `w_c`, `b_c`) read by the same ops (`LSTMBlockCell`,
`GRUBlockCell`, `BlockLSTM`), so the graphs are those a TF1 model with contrib's cells holds; contrib's
gradients of the step ops are registered here, so they train. Imported by builders (`common` first: TF1
behaviour set before TensorFlow is used)."""

from __future__ import annotations

from common import tf, v1

LSTMStateTuple = v1.nn.rnn_cell.LSTMStateTuple


class LSTMBlockCell(v1.nn.rnn_cell.RNNCell):
    """contrib's `LSTMBlockCell`: one `LSTMBlockCell` op per step (gates i, j, f, o; forget bias and cell clip
    as attributes)."""

    def __init__(self, num_units: int, forget_bias: float = 1.0, cell_clip: float | None = None,
                 use_peephole: bool = False, name: str = "lstm_cell"):
        super().__init__(name=name)
        self._units, self._forget_bias, self._peephole = num_units, forget_bias, use_peephole
        self._cell_clip = cell_clip if cell_clip is not None else -1.0

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self._units, self._units)

    @property
    def output_size(self) -> int:
        return self._units

    def build(self, input_shape: tf.TensorShape) -> None:
        width = int(input_shape[-1]) + self._units
        self._kernel = self.add_weight("kernel", [width, 4 * self._units])
        self._bias = self.add_weight("bias", [4 * self._units], initializer=v1.random_uniform_initializer(-0.5, 0.5))
        names = ("w_i_diag", "w_f_diag", "w_o_diag")
        self._diag = [self.add_weight(n, [self._units]) for n in names] if self._peephole else None
        self.built = True

    def call(self, inputs: tf.Tensor, state: LSTMStateTuple) -> tuple[tf.Tensor, LSTMStateTuple]:
        cs_prev, h_prev = state
        wci, wcf, wco = self._diag or [tf.zeros([self._units])] * 3
        _, cs, _, _, _, _, h = tf.raw_ops.LSTMBlockCell(
            x=inputs, cs_prev=cs_prev, h_prev=h_prev, w=self._kernel, wci=wci, wcf=wcf, wco=wco, b=self._bias,
            forget_bias=self._forget_bias, cell_clip=self._cell_clip, use_peephole=self._peephole)
        return h, LSTMStateTuple(cs, h)


class GRUBlockCell(v1.nn.rnn_cell.RNNCell):
    """contrib's `GRUBlockCell`: one `GRUBlockCell` op per step over `w_ru`, `b_ru`, `w_c`, `b_c`."""

    def __init__(self, num_units: int, name: str = "gru_cell"):
        super().__init__(name=name)
        self._units = num_units

    @property
    def state_size(self) -> int:
        return self._units

    @property
    def output_size(self) -> int:
        return self._units

    def build(self, input_shape: tf.TensorShape) -> None:
        width, units = int(input_shape[-1]) + self._units, self._units
        uniform = v1.random_uniform_initializer(-0.5, 0.5)
        self._w_ru = self.add_weight("w_ru", [width, 2 * units])
        self._b_ru = self.add_weight("b_ru", [2 * units], initializer=uniform)
        self._w_c = self.add_weight("w_c", [width, units])
        self._b_c = self.add_weight("b_c", [units], initializer=uniform)
        self.built = True

    def call(self, inputs: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        _, _, _, h = tf.raw_ops.GRUBlockCell(x=inputs, h_prev=state, w_ru=self._w_ru, w_c=self._w_c, b_ru=self._b_ru,
                                             b_c=self._b_c)
        return h, h


@tf.RegisterGradient("LSTMBlockCell")
def _lstm_block_cell_grad(op: tf.Operation, *grads: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """contrib's gradient of `LSTMBlockCell` (TF 2.21 keeps the `LSTMBlockCellGrad` kernel, not this)."""
    x, cs_prev, h_prev, w, wci, wcf, wco, b = op.inputs
    i, cs, f, o, ci, co, _ = op.outputs
    width = int(x.shape[1])
    cs_prev_grad, dicfo, wci_grad, wcf_grad, wco_grad = tf.raw_ops.LSTMBlockCellGrad(
        x=x, cs_prev=cs_prev, h_prev=h_prev, w=w, wci=wci, wcf=wcf, wco=wco, b=b, i=i, cs=cs, f=f, o=o, ci=ci,
        co=co, cs_grad=grads[1], h_grad=grads[6], use_peephole=op.get_attr("use_peephole"))
    xh_grad = tf.matmul(dicfo, w, transpose_b=True)
    w_grad = tf.matmul(tf.concat([x, h_prev], 1), dicfo, transpose_a=True)
    return (xh_grad[:, :width], cs_prev_grad, xh_grad[:, width:], w_grad, wci_grad, wcf_grad, wco_grad,
            tf.raw_ops.BiasAddGrad(out_backprop=dicfo))


@tf.RegisterGradient("GRUBlockCell")
def _gru_block_cell_grad(op: tf.Operation, *grads: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """contrib's gradient of `GRUBlockCell` (TF 2.21 keeps the `GRUBlockCellGrad` kernel, not this)."""
    x, h_prev, w_ru, w_c, b_ru, b_c = op.inputs
    r, u, c, _ = op.outputs
    d_x, d_h_prev, d_c_bar, d_ru_bar = tf.raw_ops.GRUBlockCellGrad(
        x=x, h_prev=h_prev, w_ru=w_ru, w_c=w_c, b_ru=b_ru, b_c=b_c, r=r, u=u, c=c, d_h=grads[3])
    d_w_ru = tf.matmul(tf.concat([x, h_prev], 1), d_ru_bar, transpose_a=True)
    d_w_c = tf.matmul(tf.concat([x, h_prev * r], 1), d_c_bar, transpose_a=True)
    return (d_x, d_h_prev, d_w_ru, d_w_c, tf.raw_ops.BiasAddGrad(out_backprop=d_ru_bar),
            tf.raw_ops.BiasAddGrad(out_backprop=d_c_bar))


def lstm_block_fused(inputs: tf.Tensor, num_units: int, forget_bias: float = 1.0,
                     scope: str = "lstm_block_fused_cell") -> tuple[tf.Tensor, LSTMStateTuple]:
    """contrib's `LSTMBlockFusedCell` on time-major `inputs` [T, B, in] without sequence lengths: one
    `BlockLSTM` op over all steps; (outputs [T, B, units], its final state: the last step's)."""
    steps, width = inputs.shape[0], int(inputs.shape[-1])
    with v1.variable_scope(scope):
        kernel = v1.get_variable("kernel", [width + num_units, 4 * num_units])
        bias = v1.get_variable("bias", [4 * num_units], initializer=v1.random_uniform_initializer(-0.5, 0.5))
    zeros = tf.zeros(tf.stack([tf.shape(inputs)[1], num_units]))
    peephole = tf.zeros([num_units])
    _, cs, _, _, _, _, h = tf.raw_ops.BlockLSTM(
        seq_len_max=tf.cast(steps, tf.int64), x=inputs, cs_prev=zeros, h_prev=zeros, w=kernel, wci=peephole,
        wcf=peephole, wco=peephole, b=bias, forget_bias=forget_bias, cell_clip=-1.0, use_peephole=False)
    return h, LSTMStateTuple(cs[-1], h[-1])
