"""Not a backend: ONNX models traced through ndonnx, and run with onnxruntime.

ndonnx implements the array API standard on lazy arrays that record ONNX operations, so
running multinet's own network on its arrays *is* the export: there is no second copy
of the network to keep in step. This module is the only one that names ndonnx, onnx or
onnxruntime; ``multinet.export`` decides what is traced and what the graphs look like.

All three come with the ``onnx`` extra (``pip install 'multinet[onnx]'``). Importing
this module imports none of them: ``tracer()`` and ``open_model()`` do, and raise
``BackendUnavailable`` with the install line when they are missing.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from multinet._version import __version__
from multinet.errors import BackendUnavailable, MultinetError
from multinet.files import not_of_kind

INSTALL = "pip install 'multinet[onnx]'"
#: The domain of the standard ONNX operators (the only one the models use).
DEFAULT_DOMAIN = ""


def _missing(what: str, exc: ImportError) -> BackendUnavailable:
    return BackendUnavailable(f"{what} ({exc.name or exc} is not installed): {INSTALL}")


@dataclass(frozen=True)
class Tracer:
    """ndonnx as an array-API namespace for tracing, and the step that turns traced
    arrays into a finished model."""

    #: The array-API namespace whose arrays record ONNX operations.
    xp: Any
    #: ``input(shape, dtype) -> array``: a graph input; a ``str`` in ``shape`` is a
    #: symbolic dimension ("N"), ``dtype`` a name ("uint8").
    input: Callable[..., Any]
    #: ``constant(numpy_array) -> array``: a value stored in the graph.
    constant: Callable[[np.ndarray], Any]
    #: ``finish(inputs, outputs, metadata, doc) -> bytes``: the serialized model (see
    #: ``_finish``).
    finish: Callable[..., bytes]
    #: ``{"ndonnx": ..., "onnx": ..., "onnxruntime": ...}``: versions, for the metadata.
    versions: dict


def tracer() -> Tracer:
    """The tracing tools; ``BackendUnavailable`` (one line, with the fix) without the extra."""
    try:
        import ndonnx as ndx
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise _missing("ONNX export needs ndonnx, onnx and onnxruntime", exc) from None

    def argument(shape, dtype):
        return ndx.argument(shape=tuple(shape), dtype=getattr(ndx, dtype))

    def finish(inputs: dict, outputs: dict, metadata: dict, doc: str) -> bytes:
        return _finish(ndx.build(inputs, outputs), metadata, doc)

    return Tracer(xp=ndx, input=argument, constant=ndx.asarray, finish=finish,
                  versions={"ndonnx": ndx.__version__, "onnx": onnx.__version__,
                            "onnxruntime": onnxruntime.__version__})


def _finish(model, metadata: dict, doc: str) -> bytes:
    """Simplify, label and check a traced model.

    Simplification is onnxruntime's own *basic* graph optimisation level (constant
    folding, removal of redundant nodes, common subexpressions), saved back as ONNX. Its
    documentation describes these rewrites as semantics-preserving and independent of the
    hardware and execution provider, unlike the extended and layout levels, whose output
    is only meant for the machine that made it. onnxruntime declares every operator
    domain it knows in the saved file; those no node uses are dropped again, so the model
    asks a runtime for nothing beyond the standard operators it uses. ``onnx.checker``
    (with full shape inference) must accept the result.

    Constant folding stores the value of every subgraph whose inputs are known. ndonnx
    guards each matrix product with an ``If`` for empty operands (an onnxruntime bug);
    where the batch size is fixed, the zeros of that unused branch are known, and folding
    them would store a zero tensor the size of each weight gradient (measured: the mlp
    preset's step at batch 64 grows from 0.17 MB to 2.6 MB). So when folding makes the
    model larger, the basic level runs again without it.
    """
    import onnx

    simplified = _optimized(model)
    if simplified.ByteSize() > model.ByteSize():
        simplified = _optimized(model, disabled=["ConstantFolding"])
    used = {node.domain for node in _all_nodes(simplified.graph)}
    kept = [opset for opset in simplified.opset_import if opset.domain in used | {DEFAULT_DOMAIN}]
    del simplified.opset_import[:]
    simplified.opset_import.extend(kept)
    props = {p.key: p.value for p in model.metadata_props}  # ndonnx's schema of the I/O
    onnx.helper.set_model_props(simplified, {**props, **metadata})
    simplified.producer_name = "multinet"
    simplified.producer_version = __version__
    simplified.doc_string = doc
    simplified.graph.name = "multinet"
    onnx.checker.check_model(simplified, full_check=True)
    return simplified.SerializeToString()


def _optimized(model, disabled=()):
    """``model`` after onnxruntime's basic optimisations, less the ``disabled`` ones."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="multinet-onnx-") as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.path.join(folder, "simplified.onnx")
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"],
                             disabled_optimizers=list(disabled))
        return onnx.load(options.optimized_model_filepath)


def _all_nodes(graph):
    """Every node of a graph, including those inside subgraphs (``If`` branches)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else ()),
                             *attribute.graphs):
                yield from _all_nodes(subgraph)


def node_domains(model_bytes: bytes) -> set[str]:
    """The operator domains a serialized model's nodes use ("" is standard ONNX)."""
    import onnx

    return {node.domain for node in _all_nodes(onnx.load_from_string(model_bytes).graph)}


class ModelError(MultinetError, ValueError):
    """An ONNX model file that is missing, unreadable, or not a valid multinet model; the
    message names the file and what is wrong, in one line."""


@dataclass(frozen=True)
class Model:
    """An ONNX model opened in onnxruntime."""

    #: ``run(feeds) -> {output name: numpy array}`` for ``feeds``: {input name: array}.
    run: Callable[[dict], dict]
    #: ``{name: (shape, element type)}``; a symbolic dimension is its name (a ``str``),
    #: types are onnxruntime's names ("tensor(uint8)").
    inputs: dict
    outputs: dict
    #: The model's metadata properties.
    metadata: dict
    #: The onnxruntime version that runs it.
    version: str
    #: How messages name the model: its path, or "the model" for bytes.
    name: str = "the model"
    #: ``((name, numpy array), ...)``: every value stored in the graph (initializers,
    #: sparse initializers, constant and attribute values, in subgraphs too), for
    #: checking the weights as a checkpoint's are checked.
    tensors: tuple = ()


def shown(name: str) -> str:
    """A name read from a file, made safe for a one-line message (line breaks escaped)."""
    return name.encode("unicode_escape").decode("ascii")


def _stored_tensors(onnx, graph) -> list:
    """``(name, TensorProto)`` for every value a graph stores, subgraphs included."""
    found = [(t.name, t) for t in graph.initializer]
    found += [(s.values.name, s.values) for s in graph.sparse_initializer]
    kinds = onnx.AttributeProto
    for node in graph.node:
        for attribute in node.attribute:
            where = f"{node.name or node.op_type}.{attribute.name}"
            if attribute.type == kinds.TENSOR:
                found.append((where, attribute.t))
            elif attribute.type == kinds.SPARSE_TENSOR:
                found.append((where, attribute.sparse_tensor.values))
            elif attribute.type in (kinds.FLOAT, kinds.FLOATS):
                values = ([attribute.f] if attribute.type == kinds.FLOAT
                          else list(attribute.floats))
                found.append((where, onnx.numpy_helper.from_array(
                    np.asarray(values, dtype=np.float32), where)))
            for tensor in attribute.tensors:
                found.append((where, tensor))
            for subgraph in (*([attribute.g] if attribute.HasField("g") else ()),
                             *attribute.graphs):
                found += _stored_tensors(onnx, subgraph)
    return found


def _arrays(onnx, model, name: str) -> tuple:
    """The model's stored values as NumPy arrays; ``ModelError`` for values kept in
    other files (multinet's models hold all of theirs) or that cannot be decoded."""
    arrays = []
    for tensor_name, tensor in _stored_tensors(onnx, model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(f"{name}: keeps {shown(tensor_name)} in another file; a "
                             "multinet model holds all its values")
        try:
            arrays.append((tensor_name, onnx.numpy_helper.to_array(tensor)))
        except Exception as exc:  # noqa: BLE001 - a damaged tensor raises anything
            raise ModelError(f"{name}: cannot read the stored value {shown(tensor_name)} "
                             f"({type(exc).__name__})") from None
    return tuple(arrays)


def open_model(path_or_bytes) -> Model:
    """Open a model file (or serialized bytes) in onnxruntime on the CPU.

    The file is read once: the bytes onnxruntime runs are the bytes whose stored values
    ``Model.tensors`` holds.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike or bytes
        A model file, or a serialized model.

    Returns
    -------
    Model
        The opened model, its inputs, outputs, metadata and stored values.

    Raises
    ------
    BackendUnavailable
        Without onnx or onnxruntime (the ``onnx`` extra).
    ModelError
        For a file that is missing or unreadable, or no ONNX model onnxruntime can run.
    """
    try:
        import onnx
        import onnxruntime as ort
        from google.protobuf.message import DecodeError
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    except ImportError as exc:
        raise _missing("running an ONNX model needs onnx and onnxruntime", exc) from None
    source, name = path_or_bytes, "the model"
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if os.path.isdir(source):
            raise ModelError(f"{name}: is a folder, not an ONNX model file")
        if not os.path.exists(source):
            raise ModelError(f"{name}: no such ONNX model file")
        wrong = not_of_kind(source, "onnx")  # a FIFO would block; a checkpoint is named
        if wrong is not None:
            raise ModelError(f"{name}: {wrong}")
        try:
            with open(source, "rb") as file:
                source = file.read()
        except OSError as exc:
            raise ModelError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    try:
        parsed = onnx.load_from_string(source)
    except (DecodeError, ValueError, TypeError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name}: not an ONNX model ({first_line[:200]})") from None
    tensors = _arrays(onnx, parsed, name)  # before onnxruntime reads any other file
    try:
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors share no base class below Exception
        if type(exc).__module__ != ort_errors.__name__ and not isinstance(exc, OSError):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name}: onnxruntime cannot load it ({first_line})") from None
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict) -> dict:
        return dict(zip(names, session.run(names, feeds)))

    def described(values):
        return {v.name: (tuple(v.shape), v.type) for v in values}

    return Model(run=run, inputs=described(session.get_inputs()),
                 outputs=described(session.get_outputs()),
                 metadata=dict(session.get_modelmeta().custom_metadata_map),
                 version=ort.__version__, name=name, tensors=tensors)


def check_signature(model: Model, inputs: dict, outputs: dict) -> None:
    """``ModelError`` unless the model has the ``inputs`` and ``outputs`` named, each
    ``{name: (type, shape after the batch axis)}``: "tensor(uint8)", ``(28, 28)``."""
    for kind, wanted, found in (("input", inputs, model.inputs),
                                ("output", outputs, model.outputs)):
        for name, (element, tail) in wanted.items():
            if name not in found:
                raise ModelError(f"{model.name}: not a multinet inference model: it needs "
                                 f"the inputs {', '.join(inputs)} and the outputs "
                                 f"{', '.join(outputs)} (multinet export --onnx)")
            shape, got = found[name]
            if got != element or len(shape) != 1 + len(tail) or tuple(shape[1:]) != tail:
                raise ModelError(f"{model.name}: not a multinet inference model: its {kind} "
                                 f"{name} is {got} {list(shape)}, not {element} "
                                 f"{['N', *tail]}")


def check_values(model: Model, shapes: list, dtype: str) -> None:
    """``ModelError`` unless the floating-point values the model stores with an axis are
    finite and have exactly ``shapes`` (in any order) and ``dtype``: the weights of a
    network, when the graph stores nothing else but 0-d constants. Those may be NaN or
    infinite: ndonnx's ``max`` (a max-pooling layer's) stores NaN, its answer where the
    input holds one, and -inf, the maximum of no values. Shapes are compared as matrices
    ``(everything before the last axis, last axis)``: constant folding may store a
    convolution's kernel ``(k, k, C_in, C_out)`` as the ``(k * k * C_in, C_out)`` matrix
    of its im2col product, the same values in the same order."""
    found = []
    for name, value in model.tensors:
        if value.dtype.kind not in "fc" or not value.ndim:
            continue
        if not np.all(np.isfinite(value)):
            raise ModelError(f"{model.name}: not a valid multinet model: {shown(name)} holds "
                             "NaN or infinite values")
        if value.dtype != np.dtype(dtype):
            raise ModelError(f"{model.name}: not a valid multinet model: {shown(name)} "
                             f"is {value.dtype}; its configuration says {dtype}")
        found.append(tuple(value.shape))

    def as_matrices(many):
        return sorted(s if len(s) < 2 else (int(np.prod(s[:-1])), s[-1]) for s in many)

    if as_matrices(found) != as_matrices(map(tuple, shapes)):
        raise ModelError(f"{model.name}: not a valid multinet model: it stores weights "
                         f"shaped {', '.join(map(str, sorted(found))) or 'nothing'}; its "
                         f"network has {', '.join(map(str, sorted(map(tuple, shapes))))}")
