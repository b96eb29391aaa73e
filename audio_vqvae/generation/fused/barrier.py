"""The handshake of the two threads that share one utterance: atomic loads and stores of int64 counters
(acquire/release) and a spin-then-yield barrier on them."""

from __future__ import annotations

from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _load_acquire(typingctx, array, index):
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()
    return types.void(array, index, value), codegen


FLAG_STRIDE = 16  # int64s between the two threads' flags: one 128-byte line each
_SPINS_BEFORE_YIELD = 4096  # ~ a few microseconds: longer waits mean the other thread is not running
_sched_yield = types.ExternalFunction("sched_yield", types.int32())  # libc, resolved by name (cache-safe)


@njit(inline="always")
def barrier(flags, thread, count):
    """Two-thread barrier on monotonically increasing counters (release my count, acquire yours).

    ``flags`` is int64 (2 * FLAG_STRIDE,), zeros at the start; ``count`` goes up by one per call.
    Spins briefly, then yields the core: when the machine is busy the other thread may be waiting
    for this very core, and spinning through its time slice would stall both.
    """
    _store_release(flags, thread * FLAG_STRIDE, count)
    other = (1 - thread) * FLAG_STRIDE
    spins = 0
    while _load_acquire(flags, other) < count:
        spins += 1
        if spins > _SPINS_BEFORE_YIELD:
            _sched_yield()
