"""A step captured once as a CUDA graph and replayed: what ``Backend.capture_step`` does
on CuPy and on PyTorch, less the library's own capture (``record``).

A CUDA graph replays the kernels it captured on the very buffers they used, so the step
runs on buffers of the graph's own: copies of the first call's arguments (the static
inputs) and the outputs the captured call allocated. A replay copies into the static
inputs only the arguments that are not already there, and returns the outputs, which
the next replay overwrites (the caller copies what it keeps). An in-place step (a
mutable-array backend's, ``optim.update_in_place``) returns some static inputs
themselves (the parameters): passed back, they are not copied at all.

An argument the caller passes again, the same array object as last time, is taken as
unchanged and not copied again (the images of every step): the caller never changes an
argument in place between two calls, and never changes the graph's own buffers at all;
a step that changes an argument in place returns it (as ``optim.update_in_place``
does), so that the next call copies it again. Every argument and every output is an
array; a number that changes from step to step (the learning rate) travels as a 0-d
array, so the graph reads it instead of keeping the first call's value.
"""

from __future__ import annotations

from typing import Any, Callable

from multinet.errors import InvalidArgument

#: Calls of the step before it is captured: the first loads and compiles its kernels and
#: creates the libraries' handles (which must not happen during a capture); PyTorch's
#: documentation warms up on three.
WARMUP_CALLS = 3


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _check_arrays(values, what: str) -> tuple:
    values = tuple(values)
    for i, value in enumerate(values):
        if not _is_array(value):
            raise InvalidArgument(f"a captured step takes and returns arrays only: {what} "
                                  f"{i} is {type(value).__name__}")
    return values


def capture(fn: Callable, args: tuple, *, clone: Callable, copy_into: Callable,
            record: Callable) -> Callable:
    """``replay(*args)``: ``fn`` captured once over static buffers of its own.

    Parameters
    ----------
    fn : callable
        ``fn(*args) -> tuple of arrays``: the step; its kernels must not wait for the
        host (no reading a value back), or the capture fails.
    args : tuple of arrays
        The first call's arguments: their shapes and dtypes are the graph's; they are
        copied, never changed.
    clone : callable
        ``clone(array)``: a new array of the library's with the same values.
    copy_into : callable
        ``copy_into(destination, source)``: queue a copy of ``source``'s values into
        ``destination`` on the stream the graph is launched on.
    record : callable
        ``record(call) -> (outputs, launch)``: warm ``call()`` up (``WARMUP_CALLS``),
        capture one call of it and return what that call returned and ``launch()``,
        which replays the graph on the current stream.

    Returns
    -------
    callable
        ``replay(*args) -> tuple of arrays``: the graph's outputs after one replay.

    Raises
    ------
    InvalidArgument
        Where an argument or an output is no array, or (from ``replay``) where the
        arguments differ in number, shape or dtype from the first call's.
    """
    static = tuple(clone(a) for a in _check_arrays(args, "argument"))
    outputs, launch = record(lambda: tuple(fn(*static)))
    outputs = _check_arrays(outputs, "output")
    # Buffers the graph writes: an argument that is one of them changes at every replay,
    # so it is copied every time it is passed (unless it is that very static input).
    written = (*static, *outputs)
    # The static inputs an in-place step changes (and returns): what the caller last
    # copied into one of them is no longer there after a replay.
    changed = [any(buffer is out for out in outputs) for buffer in static]
    # The caller's array each static input last received, while it is unchanged. None at
    # first: the warm-up changed the static inputs of an in-place step.
    last: list[Any] = [None] * len(static)

    def replay(*new):
        if len(new) != len(static):
            raise InvalidArgument(f"a captured step takes {len(static)} arrays, got "
                                  f"{len(new)}")
        for i, (buffer, value) in enumerate(zip(static, new)):
            if value is buffer or value is last[i]:
                continue
            if (not _is_array(value) or tuple(value.shape) != tuple(buffer.shape)
                    or value.dtype != buffer.dtype):
                raise InvalidArgument(
                    f"argument {i} of a captured step must stay {buffer.dtype} of shape "
                    f"{tuple(buffer.shape)}, got "
                    f"{getattr(value, 'dtype', type(value).__name__)} of shape "
                    f"{tuple(getattr(value, 'shape', ()))}")
            copy_into(buffer, value)
            last[i] = None if changed[i] or any(value is w for w in written) else value
        launch()
        return outputs

    return replay
