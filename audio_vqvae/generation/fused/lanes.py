"""Register-held vectors of LANES float32 for the kernels' products (numba intrinsics over LLVM vectors).

Two products keep their partial sums in registers: :func:`lanes_product` along a block of LANES
utterances (activations (channels, LANES), batch innermost: one register holds one channel of the whole
block), :func:`row_product` along the outputs of one utterance. A product loads each weight once,
broadcasts it (or the input) and FMAs it into accumulators held in registers. The explicit vector type
makes those accumulators SSA values (LLVM keeps them in registers); numba arrays could alias, so plain
loops would reload and store them at every input. Each output is ``init`` followed by one FMA per
input in input order: the canonical sum of every kernel, so lanes and utterances alone give
bit-identical results.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from audio_vqvae.generation.fused.numerics import FASTMATH

LANES = 8  # utterances per block: one AVX2 register of float32
TILE = 8  # output channels per register tile: 8 independent FMA chains hide the FMA latency
_VECTOR = ir.VectorType(ir.FloatType(), LANES)


class _LaneVectorType(types.Type):
    def __init__(self):
        super().__init__(name=f"LaneVector{LANES}xf32")


_lane_vector = _LaneVectorType()


@register_model(_LaneVectorType)
class _LaneVectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _element_pointer(context, builder, array_type, array, index):
    view = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, view, [index], wraparound=False)


@intrinsic
def _vector_load(typingctx, array, index):
    """``array[index : index + LANES]`` of a 1-d float32 array as one vector (no bounds check)."""
    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load(builder.bitcast(pointer, _VECTOR.as_pointer()), align=4)
    return _lane_vector(array, index), codegen


@intrinsic
def _vector_store(typingctx, array, index, vector):
    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(pointer, _VECTOR.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(array, index, vector), codegen


@intrinsic
def _vector_broadcast(typingctx, array, index):
    """``array[index]`` in every lane (no bounds check)."""
    def codegen(context, builder, signature, args):
        value = builder.load(_element_pointer(context, builder, signature.args[0], args[0], args[1]), align=4)
        vector = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(vector, ir.Constant(_VECTOR, ir.Undefined), mask)
    return _lane_vector(array, index), codegen


@intrinsic
def _vector_fma(typingctx, a, b, c):
    """a * b + c rounded once: the same operation 'contract' makes of ``c += a * b`` in the scalar kernels."""
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3),
                                                  f"llvm.fma.v{LANES}f32")
        return builder.call(function, args)
    return _lane_vector(_lane_vector, _lane_vector, _lane_vector), codegen


@njit(fastmath=FASTMATH, error_model="numpy")  # a call, not numba-inlined: keeps the compile of the kernels short
def lanes_product(x, x_start, inputs, weights, w_start, outputs, out, out_start):
    """out[o] += sum_i x[i] * weights[i, o] for lane vectors, i in input order.

    x: (inputs, LANES) from flat index ``x_start``; weights: (inputs, outputs) row-major from
    ``w_start``; out: (outputs, LANES) from ``out_start``, holding the initial value.
    """
    o = 0
    while o + TILE <= outputs:
        at = out_start + o * LANES
        a0 = _vector_load(out, at)
        a1 = _vector_load(out, at + LANES)
        a2 = _vector_load(out, at + 2 * LANES)
        a3 = _vector_load(out, at + 3 * LANES)
        a4 = _vector_load(out, at + 4 * LANES)
        a5 = _vector_load(out, at + 5 * LANES)
        a6 = _vector_load(out, at + 6 * LANES)
        a7 = _vector_load(out, at + 7 * LANES)
        w = w_start + o
        for i in range(inputs):
            value = _vector_load(x, x_start + i * LANES)
            a0 = _vector_fma(value, _vector_broadcast(weights, w), a0)
            a1 = _vector_fma(value, _vector_broadcast(weights, w + 1), a1)
            a2 = _vector_fma(value, _vector_broadcast(weights, w + 2), a2)
            a3 = _vector_fma(value, _vector_broadcast(weights, w + 3), a3)
            a4 = _vector_fma(value, _vector_broadcast(weights, w + 4), a4)
            a5 = _vector_fma(value, _vector_broadcast(weights, w + 5), a5)
            a6 = _vector_fma(value, _vector_broadcast(weights, w + 6), a6)
            a7 = _vector_fma(value, _vector_broadcast(weights, w + 7), a7)
            w += outputs
        _vector_store(out, at, a0)
        _vector_store(out, at + LANES, a1)
        _vector_store(out, at + 2 * LANES, a2)
        _vector_store(out, at + 3 * LANES, a3)
        _vector_store(out, at + 4 * LANES, a4)
        _vector_store(out, at + 5 * LANES, a5)
        _vector_store(out, at + 6 * LANES, a6)
        _vector_store(out, at + 7 * LANES, a7)
        o += TILE
    while o < outputs:  # shapes that are not a multiple of TILE
        at = out_start + o * LANES
        a0 = _vector_load(out, at)
        w = w_start + o
        for i in range(inputs):
            a0 = _vector_fma(_vector_load(x, x_start + i * LANES), _vector_broadcast(weights, w), a0)
            w += outputs
        _vector_store(out, at, a0)
        o += 1


@intrinsic
def _scalar_fma(typingctx, a, b, c):
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 3),
                                                  "llvm.fma.f32")
        return builder.call(function, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(fastmath=FASTMATH, error_model="numpy")  # a call, not numba-inlined: keeps the compile of the kernels short
def row_product(x, x_start, inputs, weights, w_start, stride, outputs, out, out_start):
    """out[o] += sum_i x[i] * weights[i, o] for one utterance, i in input order (the canonical sum).

    Vectors run along the outputs, 4 of them held in registers across the inputs, so each partial sum
    stays in a register instead of being loaded and stored once per input. x: (inputs,) from
    ``x_start``; weights: rows of ``stride`` floats from ``w_start``; out: (outputs,) from ``out_start``.
    """
    o = 0
    while o + 4 * LANES <= outputs:
        at = out_start + o
        a0 = _vector_load(out, at)
        a1 = _vector_load(out, at + LANES)
        a2 = _vector_load(out, at + 2 * LANES)
        a3 = _vector_load(out, at + 3 * LANES)
        w = w_start + o
        for i in range(inputs):
            value = _vector_broadcast(x, x_start + i)
            a0 = _vector_fma(value, _vector_load(weights, w), a0)
            a1 = _vector_fma(value, _vector_load(weights, w + LANES), a1)
            a2 = _vector_fma(value, _vector_load(weights, w + 2 * LANES), a2)
            a3 = _vector_fma(value, _vector_load(weights, w + 3 * LANES), a3)
            w += stride
        _vector_store(out, at, a0)
        _vector_store(out, at + LANES, a1)
        _vector_store(out, at + 2 * LANES, a2)
        _vector_store(out, at + 3 * LANES, a3)
        o += 4 * LANES
    while o + LANES <= outputs:
        at = out_start + o
        a0 = _vector_load(out, at)
        w = w_start + o
        for i in range(inputs):
            a0 = _vector_fma(_vector_broadcast(x, x_start + i), _vector_load(weights, w), a0)
            w += stride
        _vector_store(out, at, a0)
        o += LANES
    while o < outputs:
        total = out[out_start + o]
        w = w_start + o
        for i in range(inputs):
            total = _scalar_fma(x[x_start + i], weights[w], total)
            w += stride
        out[out_start + o] = total
        o += 1
