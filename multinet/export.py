"""ONNX export: a checkpoint's network, and one step of its training, as portable graphs.

Nothing here is a second implementation of the network. The graphs are what
``multinet.network`` and ``multinet.optim`` compute when they run on ndonnx, an array
library whose arrays record ONNX operations instead of computing (the tracing tools are
in ``multinet.backends.onnx``, the only module that imports ndonnx, onnx or
onnxruntime), with the checkpoint's layers (``TrainConfig.network_layers()``: a
perceptron, or convolutions, pooling and dense layers). So the exported model is the
trained network, whatever backend trained it.

Inference graph (``inference_model``), for checkpoints in either dtype:

* input ``images``: ``uint8`` ``(N, 28, 28)``, ``N`` symbolic, raw pixels 0-255; the
  scaling to [0, 1] happens inside the graph, as on every backend;
* outputs ``logits``: ``float32`` ``(N, 10)`` (a float64 checkpoint computes in float64
  and rounds only its logits) and ``labels``: ``int64`` ``(N,)``, the largest logit's
  index (``network.predict``);
* with ``weights_as_inputs``, the parameters are inputs ``params/W1``, ... (the training
  graph's names) instead of stored values: a network trained elsewhere runs on it.

Training-step graph (``training_model``): one step of the checkpoint's optimizer (SGD,
momentum or Adam, with its weight decay), in the checkpoint's dtype:

* inputs ``images`` ``uint8`` ``(B, 28, 28)`` and ``labels`` ``int64`` ``(B,)`` (``B``
  symbolic, or fixed with ``batch_size``), ``lr`` (0-d, the step's learning rate: a
  schedule is the caller's), and the state under the checkpoint's own tensor names:
  ``params/W1``, ``params/b1``, ..., ``opt/t`` and, for momentum and Adam,
  ``opt/m/W1``, ... and ``opt/v/W1``, ...;
* outputs ``loss`` and ``accuracy`` (0-d, of the batch before the step) and
  ``next/<name>`` for every state input, to be fed back as ``<name>`` next step.

Both carry the checkpoint's metadata as ONNX metadata properties (``model_metadata``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from multinet import checkpoint as ckpt
from multinet import locks, network, optim
from multinet._version import __version__
from multinet.backends import onnx as onnx_backend
from multinet.backends.onnx import ModelError
from multinet.catalog import CLASSES, DATASETS
from multinet.checkpoint import Checkpoint
from multinet.checks import is_integer
from multinet.data import flatten, scale_images
from multinet.errors import InvalidArgument, MultinetError, OutputsNotFinite, argument
from multinet.evaluation import report
from multinet.files import OutputError, check_output, reason, write_atomic
from multinet.initializers import to_backend
from multinet.layers import param_shapes
from multinet.parity import relative_error
from multinet.training.config import FEATURES, TrainConfig
from multinet.training.prediction import check_finite, largest_weight, make_predictor
from multinet.training.steps import make_step

#: The images every multinet dataset holds (MNIST and Fashion-MNIST), rows x columns.
IMAGE_SHAPE = (28, 28)
#: How far the exported logits may be from multinet's own: their norm-wise relative
#: error (``multinet.parity.relative_error``, the measure of every parity check; an
#: element's own relative error says nothing where a logit is a cancelling sum near 0).
#: Measured in float32: 2e-7 to 3e-7, as between NumPy and float64.
LOGIT_TOLERANCE = 1e-5
#: Images per onnxruntime call when evaluating a model. Memory grows with it and time
#: does not (measured, the cnn preset on the 10,000 test images: 5.3 s of CPU and 0.2 GB
#: at 1,000 a call, 5.7 s and 1.2 GB at 10,000, im2col's patches most of it).
EVALUATION_BATCH = 1_000


def _tracer():
    return onnx_backend.tracer()


def open_model(path_or_bytes):
    """``multinet.backends.onnx.Model``: a model file (or bytes) opened in onnxruntime."""
    return onnx_backend.open_model(path_or_bytes)


def _scaled_images(xp, images, dtype):
    """``(n, 28, 28)`` uint8 -> ``(n, 784)`` in [0, 1], as ``data.flatten`` and
    ``data.scale_images`` do on the host and the device."""
    rows = images.shape[0]
    features = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    flat = xp.reshape(images, (rows if isinstance(rows, int) else -1, features))
    return scale_images(flat, getattr(xp, dtype))


def flatten_state(params: dict, opt_state: dict) -> dict:
    """``{"params/W1": ..., "opt/t": ..., "opt/m/W1": ...}``: the names a checkpoint file
    gives the tensors, which are the training graph's state inputs."""
    flat = {}

    def walk(prefix, tree):
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}/", value)
            else:
                flat[f"{prefix}{key}"] = value

    walk("params/", params)
    walk("opt/", opt_state)
    return flat


def unflatten_state(flat: dict) -> tuple[dict, dict]:
    """``(params, opt_state)`` from ``flatten_state``'s names (``next/`` prefixes, as the
    training graph's outputs have, are ignored)."""
    trees: dict = {"params": {}, "opt": {}}
    for name, value in flat.items():
        *parents, leaf = name.removeprefix("next/").split("/")
        node = trees
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return trees["params"], trees["opt"]


def model_metadata(checkpoint: Checkpoint, graph: str, versions: dict) -> dict:
    """ONNX metadata properties (strings) from the checkpoint's metadata.

    ``graph`` is "inference" or "train_step". The keys: ``multinet_graph``,
    ``multinet_version`` (the exporter's), ``dataset``, ``dataset_content_sha256`` (JSON:
    the SHA-256 of each uncompressed IDX file, ``multinet.data``), ``sizes``
    (``TrainConfig.describe_network``: "784-10-10", or the layers as text), ``dtype``,
    ``trained_on`` (backend), ``steps`` (optimizer steps taken), ``loss``,
    ``train_accuracy``, ``dev_accuracy`` (the last logged values), ``checkpoint`` (JSON:
    the checkpoint's whole metadata except its history) and ``exported_with`` (JSON:
    ndonnx, onnx and onnxruntime versions).
    """
    meta = checkpoint.metadata
    history = meta.get("history") or [{}]
    values = {
        "multinet_graph": graph,
        "multinet_version": __version__,
        "dataset": checkpoint.dataset,
        "dataset_content_sha256": json.dumps(meta["dataset"].get("content_sha256", {}),
                                             sort_keys=True),
        "sizes": checkpoint.config.describe_network(),
        "dtype": checkpoint.config.dtype,
        "trained_on": meta.get("backend"),
        "steps": meta.get("progress", {}).get("step"),
        **{key: history[-1].get(key) for key in ("loss", "train_accuracy", "dev_accuracy")},
        "checkpoint": json.dumps({k: v for k, v in meta.items() if k != "history"},
                                 sort_keys=True),
        "exported_with": json.dumps(versions, sort_keys=True),
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def _host_params(checkpoint: Checkpoint) -> dict:
    dtype = checkpoint.config.dtype
    return {k: np.asarray(v, dtype=dtype) for k, v in checkpoint.params.items()}


def inference_model(checkpoint: Checkpoint, tracer=None, weights_as_inputs=False) -> bytes:
    """The serialized inference graph of a checkpoint (contract in the module doc); with
    ``weights_as_inputs``, of its sizes and dtype, the weights being inputs."""
    tracer = tracer or _tracer()
    xp, dtype = tracer.xp, checkpoint.config.dtype
    params = {k: tracer.input(v.shape, dtype) if weights_as_inputs else tracer.constant(v)
              for k, v in _host_params(checkpoint).items()}
    images = tracer.input(("N", *IMAGE_SHAPE), "uint8")
    logits = network.forward(params, _scaled_images(xp, images, dtype),
                             checkpoint.config.network_layers())
    # network.predict is argmax(forward): taken from the logits already traced, so the
    # graph holds one forward pass, not two.
    labels = xp.argmax(logits, axis=1)
    outputs = {"logits": xp.astype(logits, xp.float32), "labels": xp.astype(labels, xp.int64)}
    doc = (f"multinet {checkpoint.config.describe_network()} network ({checkpoint.dataset}, "
           f"{dtype}). Input images: uint8 (N, 28, 28) raw pixels. Outputs logits: float32 "
           f"(N, {CLASSES}); labels: int64 (N,).")
    weights = {f"params/{k}": v for k, v in params.items()} if weights_as_inputs else {}
    return tracer.finish({"images": images, **weights}, outputs,
                         model_metadata(checkpoint, "inference", tracer.versions), doc)


def state_inputs(checkpoint: Checkpoint) -> dict:
    """The training graph's state inputs for a checkpoint: its parameters and optimizer
    state by name (``flatten_state``), in the checkpoint's dtype, after checking that
    they are what its optimizer keeps (``optim.init_state``: names and shapes; the step
    count ``opt/t`` is 0-d). ``MultinetError`` if they are not."""
    params = _host_params(checkpoint)
    expected = flatten_state(params, optim.init_state(checkpoint.config.optimizer_spec(),
                                                      params))
    stored = flatten_state(params, checkpoint.opt_state)
    shapes = {name: np.shape(value) for name, value in stored.items()}
    if shapes != {name: np.shape(value) for name, value in expected.items()}:
        raise MultinetError(f"the checkpoint's optimizer state does not match its optimizer "
                            f"{checkpoint.config.optimizer!r} (tensors "
                            f"{', '.join(sorted(stored))})")
    return {name: np.asarray(stored[name], dtype=checkpoint.config.dtype) for name in expected}


def training_model(checkpoint: Checkpoint, batch_size: int | None = None,
                   tracer=None) -> bytes:
    """The serialized graph of one training step (contract in the module doc).

    ``batch_size`` fixes the batch dimension; None leaves it symbolic ("N"). The
    optimizer and its hyperparameters (momentum, betas, eps, weight decay) are the
    checkpoint's, stored in the graph; the learning rate is an input.
    """
    tracer = tracer or _tracer()
    xp, config = tracer.xp, checkpoint.config
    batch = batch_size or "N"
    state = state_inputs(checkpoint)
    inputs = {"images": tracer.input((batch, *IMAGE_SHAPE), "uint8"),
              "labels": tracer.input((batch,), "int64"),
              "lr": tracer.input((), config.dtype)}
    traced = {name: tracer.input(value.shape, config.dtype) for name, value in state.items()}
    params, opt_state = unflatten_state(traced)
    step = make_step(config.optimizer_spec(), layers=config.network_layers())
    x = _scaled_images(xp, inputs["images"], config.dtype)
    new_params, new_state, loss, accuracy = step(params, opt_state, x, inputs["labels"],
                                                 inputs["lr"])
    outputs = {"loss": loss, "accuracy": accuracy,
               **{f"next/{n}": v for n, v in flatten_state(new_params, new_state).items()}}
    metadata = model_metadata(checkpoint, "train_step", tracer.versions)
    metadata["optimizer"] = json.dumps(
        {"name": config.optimizer, "momentum": config.momentum,
         "weight_decay": config.weight_decay, **_adam_constants(config.optimizer_spec())},
        sort_keys=True)
    doc = (f"One {config.optimizer} step of a multinet network ({config.dtype}). Inputs: "
           f"images uint8 ({batch}, 28, 28), labels int64 ({batch},), lr, and the state "
           "params/..., opt/... (a multinet checkpoint's tensor names). Outputs: loss, "
           "accuracy, and next/<name> for every state input.")
    return tracer.finish({**inputs, **traced}, outputs, metadata, doc)


def _adam_constants(optimizer: optim.Optimizer) -> dict:
    """Adam's constants, which the training graph stores (empty for other optimizers)."""
    if optimizer.name != "adam":
        return {}
    return {"beta1": optimizer.beta1, "beta2": optimizer.beta2, "eps": optimizer.eps}


def write(model: bytes, path, flag: str = "onnx=") -> Path:
    """Write ``model`` to ``path`` atomically (``multinet.files.write_atomic``), creating
    its folder; ``OutputError`` (one line, naming ``flag``, the argument that gave the
    path) when that is impossible."""
    try:
        return write_atomic(path, model)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot write the model ({reason(exc)})") from None


def check_inference_contract(model) -> None:
    """Check an opened model as ``checkpoint.load`` checks a checkpoint, before anything
    trusts it: ``ModelError`` (naming the model and what is wrong) unless it has the
    inputs and outputs ``inference_model`` writes, metadata the checkpoint reader would
    accept, and, stored, exactly the weights ``W1..Wk, b1..bk`` of the configured
    network (``multinet.layers.param_shapes``), finite, in the configured dtype
    (``onnx_backend.check_values``)."""
    onnx_backend.check_signature(model, {"images": ("tensor(uint8)", IMAGE_SHAPE)},
                                 {"logits": ("tensor(float)", (CLASSES,)),
                                  "labels": ("tensor(int64)", ())})
    config = _model_config(model)
    shapes = param_shapes(config.network_layers(), FEATURES)
    onnx_backend.check_values(model, list(shapes.values()), config.dtype)


def _model_config(model) -> TrainConfig:
    """The configuration in the model's ``checkpoint`` metadata, checked as a
    checkpoint's is (``TrainConfig.from_dict``, a dataset multinet knows), and agreeing
    with its ``sizes``, ``dtype`` and ``dataset`` properties."""
    meta = model.metadata
    try:
        if meta.get("multinet_graph") != "inference":
            raise ValueError(f"multinet_graph is {meta.get('multinet_graph')!r}, not "
                             "'inference'")
        saved = json.loads(meta.get("checkpoint", ""))
        config = TrainConfig.from_dict(saved.get("config"))
        name = saved.get("dataset", {}).get("name")
        sizes = config.describe_network()
        if name not in DATASETS or meta.get("dataset") != name:
            raise ValueError(f"dataset {meta.get('dataset')!r} is not one of "
                             f"{', '.join(DATASETS)} or not the checkpoint's {name!r}")
        if (meta.get("sizes"), meta.get("dtype")) != (sizes, config.dtype):
            raise ValueError(f"sizes {meta.get('sizes')!r} and dtype {meta.get('dtype')!r} "
                             f"are not the configuration's {sizes} and {config.dtype}")
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise ModelError(f"{model.name}: not a valid multinet model: its metadata: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
                         ) from None
    return config


def run_inference(model, images: np.ndarray, batch_size: int = EVALUATION_BATCH):
    """``(logits, labels)`` of an opened inference model for ``uint8`` images
    ``(n, 28, 28)``, ``batch_size`` images per call: host arrays, float32 and int64."""
    check_inference_contract(model)
    logits, labels = [], []
    for start in range(0, max(len(images), 1), batch_size):  # no images: one empty batch
        out = model.run({"images": np.ascontiguousarray(images[start:start + batch_size])})
        logits.append(out["logits"])
        labels.append(out["labels"])
    logits = np.concatenate(logits)
    bad = int(np.sum(~np.isfinite(logits).all(axis=1)))
    if bad:  # the model's weights overflow its dtype, as multinet.evaluation refuses too
        raise OutputsNotFinite(
            f"{model.name}: the model's logits are inf or NaN on {bad} of {len(logits)} "
            f"images, so its predictions would mean nothing (weights too large for its "
            f"dtype?)")
    return logits, np.concatenate(labels)


def _logits_of_images(layers):
    def logits(params, images):
        return network.forward(params, scale_images(images, params["W1"].dtype), layers)
    return logits


def multinet_outputs(params_host: dict, backend, images: np.ndarray, dtype: str,
                     chunk: int = EVALUATION_BATCH, layers=None):
    """``(logits, labels)`` multinet itself computes on ``backend`` for ``uint8`` images
    ``(n, 28, 28)``: the logits of ``network.forward`` and the predictions ``multinet
    evaluate`` makes, as host arrays. ``layers``: the network's (``TrainConfig.
    network_layers()``), None for the perceptron ``params_host`` holds."""
    check_finite(params_host, images, dtype, layers)  # inf or NaN logits compare as nothing
    backend.enable_dtype(dtype)
    params = to_backend(params_host, backend)
    device_images = backend.asarray(flatten(images))
    forward = backend.compile(_logits_of_images(layers))
    logits = [np.asarray(backend.to_numpy(forward(params, device_images[i:i + chunk, ...])))
              for i in range(0, len(images), chunk)]
    labels = make_predictor(backend, chunk, layers=layers)(params, device_images)
    return np.concatenate(logits), labels


def agreement(exported, own) -> dict:
    """How an exported model's ``(logits, labels)`` compare with multinet's own: equal
    labels, the logits' relative error (``LOGIT_TOLERANCE``) and whether both are
    within bounds."""
    (logits, labels), (own_logits, own_labels) = exported, own
    equal = int(np.sum(np.asarray(labels) == np.asarray(own_labels)))
    error = relative_error(logits, own_logits)
    return {"samples": int(len(own_labels)), "labels_equal": equal, "logit_error": error,
            "logit_tolerance": LOGIT_TOLERANCE,
            "agrees": equal == len(own_labels) and error <= LOGIT_TOLERANCE}


def evaluate_model(model, dataset, batch_size: int = EVALUATION_BATCH) -> dict:
    """The test-set report of an opened inference model in onnxruntime: the keys of
    ``multinet.evaluation.evaluate``'s report, with ``runtime`` for ``backend``;
    ``logits`` and ``predictions`` (host arrays) too, for comparisons. Raises
    ``multinet.errors.OutputsNotFinite`` where any image's logits are inf or NaN, and
    ``ModelError`` for a model ``check_inference_contract`` refuses."""
    logits, predicted = run_inference(model, dataset.test_images, batch_size)
    return {"runtime": f"onnxruntime {model.version}", **report(predicted, dataset),
            "logits": logits}


def check_exportable(checkpoint: Checkpoint) -> None:
    """Refuse a network that some picture could overflow: a model runs on any images.

    The bound ``check_finite`` clears ordinary networks with (the network's own forward
    pass, in float64, of an image of ones through the magnitudes of its weights and
    biases: ``|W_l|^T bound_(l-1) + |b_l|`` for a dense layer) must stay below half the
    largest number after every layer with weights, the last in float32, the model's
    logits' type whatever the checkpoint's dtype. ``evaluate``, ``predict`` and ``plot``
    refuse such weights where their images overflow.

    Parameters
    ----------
    checkpoint : Checkpoint
        The checkpoint to export.

    Raises
    ------
    OutputsNotFinite
        Naming the dtype and the first layer that can overflow.
    """
    dtype, layers = checkpoint.config.dtype, checkpoint.config.network_layers()
    magnitudes = {k: np.abs(np.asarray(v, dtype=np.float64))
                  for k, v in checkpoint.params.items()}
    ends = [end for end, layer in enumerate(layers, 1) if layer.has_params]
    with np.errstate(over="ignore", invalid="ignore"):
        for i, end in enumerate(ends, 1):
            bound = network.forward(magnitudes, np.ones((1, FEATURES)), layers[:end])
            limit_of = dtype if i < len(ends) or dtype == "float32" else "float32 logits"
            if not bound.max() < float(np.finfo(limit_of.split()[0]).max) / 2:
                raise OutputsNotFinite(
                    f"the network's weights are too large for {limit_of}: layer {i} of its "
                    f"forward pass can overflow to inf or NaN (largest weight "
                    f"{largest_weight(checkpoint.params):.3g}), so the model's predictions "
                    "would mean nothing; nothing was exported")


def export(checkpoint, *, onnx=None, onnx_train=None, batch_size: int | None = None,
           force: bool = False) -> list[Path]:
    """``multinet export``: trace, check and write the graphs asked for (``onnx``: the
    inference graph's path; ``onnx_train``: the training step's, with ``batch_size``)
    of ``checkpoint``, a ``Checkpoint`` or a checkpoint file's path. Returns the paths
    written. One-line errors: ``CheckpointError``, ``OutputError`` (checked before any
    tracing), ``InvalidArgument`` (no output, the same file for both, a ``batch_size``
    that is not an integer >= 1 or comes without ``onnx_train``), ``BackendUnavailable``
    without the ``onnx`` extra, ``OutputsNotFinite`` for weights whose forward pass can
    overflow (``check_exportable``), before anything is written. An output is never the
    checkpoint itself, nor (unless ``force``) an existing file that is not an ONNX model
    (``multinet.files.check_output``), and is locked while it is written
    (``multinet.locks.OutputBusy`` while another multinet process writes it)."""
    if onnx is None and onnx_train is None:
        raise InvalidArgument(f"nothing to export: give {argument('onnx', meta='OUT.onnx')}, "
                              f"{argument('onnx_train', meta='OUT.onnx')}, or both")
    if batch_size is not None:
        if onnx_train is None:
            raise InvalidArgument(f"{argument('batch_size')} fixes the training graph's "
                                  f"batch: it needs {argument('onnx_train')}")
        if not is_integer(batch_size) or batch_size < 1:
            raise InvalidArgument(f"{argument('batch_size')} must be an integer >= 1 (or "
                                  f"None: any batch size), got {batch_size!r}")
        batch_size = int(batch_size)
    outputs = {argument(name): path for name, path in (("onnx", onnx),
                                                       ("onnx_train", onnx_train))
               if path is not None}
    source = None if isinstance(checkpoint, Checkpoint) else checkpoint
    for flag, path in outputs.items():  # refused before the tracing, not after it
        check_output(path, flag, "onnx", inputs={"the checkpoint exported": source},
                     force=force)
    if onnx is not None and onnx_train is not None and (
            Path(onnx).resolve() == Path(onnx_train).resolve()):
        raise OutputError(f"{argument('onnx')} and {argument('onnx_train')} name the same "
                          f"file, {onnx}: give each model its own")
    with locks.hold(outputs):
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = ckpt.load(checkpoint)
        check_exportable(checkpoint)
        tracer = _tracer()
        written = []
        if onnx is not None:
            written.append(write(inference_model(checkpoint, tracer), onnx,
                                 argument("onnx")))
        if onnx_train is not None:
            written.append(write(training_model(checkpoint, batch_size, tracer), onnx_train,
                                 argument("onnx_train")))
    return written
