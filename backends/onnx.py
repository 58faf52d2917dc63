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


def open_model(path_or_bytes) -> Model:
    """Open a model file (or serialized bytes) in onnxruntime on the CPU.

    Raises ``BackendUnavailable`` without onnxruntime and ``MultinetError`` for a file
    that is missing or no ONNX model onnxruntime can run, each with a one-line message.
    """
    try:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    except ImportError as exc:
        raise _missing("running an ONNX model needs onnxruntime", exc) from None
    source = path_or_bytes
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise MultinetError(f"{source}: no such ONNX model file")
        source = os.fspath(source)
    try:
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors share no base class below Exception
        if type(exc).__module__ != ort_errors.__name__ and not isinstance(exc, OSError):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        name = source if isinstance(source, str) else "the model"
        raise MultinetError(f"{name}: onnxruntime cannot load it ({first_line})") from None
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict) -> dict:
        return dict(zip(names, session.run(names, feeds)))

    def described(values):
        return {v.name: (tuple(v.shape), v.type) for v in values}

    return Model(run=run, inputs=described(session.get_inputs()),
                 outputs=described(session.get_outputs()),
                 metadata=dict(session.get_modelmeta().custom_metadata_map),
                 version=ort.__version__)
