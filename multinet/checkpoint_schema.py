"""What a valid checkpoint holds: its schema, and the checks that read a file against it.

``multinet.checkpoint`` writes and reads the file; this module says what its parts must
be and checks them. ``validated`` trusts nothing: every field of the metadata and every
tensor is checked, and the first difference is one ``ValueError`` (or ``TypeError``)
naming it, which ``checkpoint.decode`` turns into a one-line ``CheckpointError``.

Schema (``multinet-checkpoint/1``): the safetensors header's ``"multinet"`` entry is a
JSON object with

* ``format``: ``"multinet-checkpoint/1"``;
* ``config``: exactly the fields of ``TrainConfig``, each of its type and range;
  ``layers`` (the hidden layers as text, such as ``"conv:16:5x5:same"``) is present
  only for a network that is not a multilayer perceptron, whose ``hidden`` is then
  ``[]``: a perceptron's configuration is written as it was before there were layers,
  and one without ``layers`` reads as a perceptron;
* ``progress``: ``epoch``, ``batch``, ``step`` (integers >= 0, with ``epoch <=
  config.epochs``), ``seconds`` (finite, >= 0) and, for a run stopped within an epoch,
  ``loss_sum`` and ``accuracy_sum`` (finite numbers: the sums over its batches so far);
* ``dataset``: ``name`` (a dataset multinet knows), ``content_sha256`` (an object from
  file roles to strings: the SHA-256 of each array trained and tested on, as an IDX file
  holds it, ``multinet.data.content_sha256s``; for the dataset's files read unchanged,
  the files' own content checksums) and, optionally, ``samples`` (``train`` and
  ``test``, integers >= 1: how many images each array held);
* ``results``, optionally: what was measured on the state saved, ``step`` (equal to
  ``progress.step``) and any of ``train_accuracy``, ``dev_accuracy``, ``test_accuracy``
  (numbers in [0, 1]), ``train_samples`` (an integer >= 1) and ``samples_per_second``
  (a finite number >= 0), each of them may be null;
* ``history``: a list of metric records (``epoch``, ``step``, ``lr``, ``loss``,
  ``train_accuracy``, ``dev_accuracy``, ``seconds``; numbers, the loss finite);
* anything else (``rng``, ``saved_at``, ...) is informative and not read.

Tensors: exactly ``params/W1 .. params/Wk`` and ``params/b1 .. params/bk``, one pair per
dense or convolutional layer of ``config.network_layers()`` (the hidden layers, then
the output layer of 10 classes), shaped as ``multinet.layers.param_shapes`` gives them
for 784 inputs (28 x 28 pixels: every dataset multinet knows): a dense layer's ``Wi``
``(fan_in, units)``, a convolution's ``(k, k, C_in, C_out)``, ``bi`` ``(units,)`` or
``(C_out,)``. For a perceptron that is ``Wi`` of shape ``(n_{i-1}, n_i)`` with ``n_0 =
784``, ``n_1 .. n_{k-1} = config.hidden`` and ``n_k = 10``. The optimizer's state:
``opt/t`` (a scalar equal to the step count) plus ``opt/m/<param>`` for momentum and
Adam and ``opt/v/<param>`` for Adam, each shaped like its parameter. All in
``config.dtype``, all finite.
"""

from __future__ import annotations

import json
import math

import numpy as np

from multinet.catalog import DATASETS, FILES
from multinet.checks import is_integer
from multinet.layers import param_shapes
from multinet.training.config import FEATURES, TrainConfig

FORMAT = "multinet-checkpoint/1"
#: What ``results`` may hold besides ``step``: the measured part of ``fit``'s summary.
RESULTS = ("train_accuracy", "dev_accuracy", "test_accuracy", "train_samples",
           "samples_per_second")


def validated(metadata: dict, tensors: dict) -> tuple[TrainConfig, dict, dict]:
    """``(config, params, opt_state)`` of a checkpoint's metadata (its ``"multinet"``
    object, ``format`` already checked) and its tensors by name.

    Parameters
    ----------
    metadata : dict
        The decoded JSON object.
    tensors : dict of str to numpy.ndarray
        Every tensor of the file, by its name (``params/W1``, ``opt/m/W1``...).

    Returns
    -------
    tuple
        The configuration, the parameters in layer order (``W1, b1, W2...``) and the
        optimizer's state as a nested dict, as NumPy arrays.

    Raises
    ------
    ValueError, TypeError, KeyError
        The first difference from the schema, in one line naming the field or tensor.
    """
    try:
        config = TrainConfig.from_dict(metadata.get("config"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"config: {exc}") from None
    progress = _validated_progress(_object(metadata, "progress"), config)
    dataset = _object(metadata, "dataset")
    _field(dataset, "dataset", "name", lambda v: v in DATASETS,
           f"one of {', '.join(DATASETS)}")
    _field(dataset, "dataset", "content_sha256",
           lambda v: isinstance(v, dict) and all(k in FILES and isinstance(s, str)
                                                 for k, s in v.items()),
           f"an object from file roles ({', '.join(FILES)}) to strings")
    _field(dataset, "dataset", "samples",
           lambda v: isinstance(v, dict) and set(v) == {"train", "test"}
           and all(is_integer(n) and n >= 1 for n in v.values()),
           "an object of train and test counts >= 1", optional=True)
    _validated_results(metadata.get("results", {}), progress)
    history = metadata.get("history", [])
    if not isinstance(history, list):
        raise ValueError(f"history must be a list, got {_shown(history)}")
    for i, record in enumerate(history):
        _validated_record(record, f"history[{i}]", progress)

    unknown = [name for name in tensors if not name.startswith(("params/", "opt/"))]
    if unknown:
        raise ValueError(f"unexpected tensor {unknown[0]}")
    params = _validated_params(_unflatten(tensors, "params/"), config)
    opt_state = _validated_opt_state(_unflatten(tensors, "opt/"), params, config, progress)
    return config, params, opt_state


def _unflatten(tensors: dict, prefix: str) -> dict:
    tree: dict = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        *parents, leaf = name[len(prefix):].split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ValueError(f"tensor {name}: {prefix}{parent} is also a tensor")
        if leaf in node:
            raise ValueError(f"tensor {name} is also a folder of tensors")
        node[leaf] = value
    return tree


def _is_number(value) -> bool:
    return is_integer(value) or isinstance(value, float)


def _is_finite(value) -> bool:
    """A finite number (an integer too large for a float is not)."""
    try:
        return _is_number(value) and math.isfinite(value)
    except OverflowError:
        return False


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(record: dict, where: str, name: str, check, wanted: str, optional=False):
    if name not in record:
        if optional:
            return None
        raise ValueError(f"{where}.{name} missing")
    value = record[name]
    if not check(value):
        raise ValueError(f"{where}.{name} must be {wanted}, got {_shown(value)}")
    return value


def _object(metadata: dict, name: str) -> dict:
    value = metadata.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object, got {_shown(value)}")
    return value


def _validated_progress(progress: dict, config: TrainConfig) -> dict:
    counter = (lambda v: is_integer(v) and v >= 0, "an integer >= 0")
    for name in ("epoch", "batch", "step"):
        _field(progress, "progress", name, *counter)
    _field(progress, "progress", "seconds", lambda v: _is_finite(v) and v >= 0,
           "a finite number >= 0")
    for name in ("loss_sum", "accuracy_sum"):
        _field(progress, "progress", name, _is_finite, "a finite number", optional=True)
    if progress["epoch"] > config.epochs or (progress["epoch"] == config.epochs
                                             and progress["batch"]):
        raise ValueError(f"progress: epoch {progress['epoch']}, batch {progress['batch']} "
                         f"is past the end of a {config.epochs}-epoch run")
    if progress["step"] < progress["epoch"] + (progress["batch"] > 0):
        raise ValueError(f"progress: step {progress['step']} is fewer than the epochs and "
                         "batches done")
    return progress


def _validated_results(results, progress: dict) -> None:
    if not isinstance(results, dict):
        raise ValueError(f"results must be an object, got {_shown(results)}")
    _field(results, "results", "step", lambda v: is_integer(v) and v == progress["step"],
           f"progress.step, {progress['step']}", optional=not results)
    for name in ("train_accuracy", "dev_accuracy", "test_accuracy"):
        _field(results, "results", name,
               lambda v: v is None or _is_finite(v) and 0 <= v <= 1, "a number in [0, 1]",
               optional=True)
    _field(results, "results", "train_samples",
           lambda v: v is None or is_integer(v) and v >= 1, "an integer >= 1", optional=True)
    _field(results, "results", "samples_per_second",
           lambda v: v is None or _is_finite(v) and v >= 0, "a finite number >= 0",
           optional=True)


def _validated_record(record, where: str, progress: dict) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object, got {_shown(record)}")
    _field(record, where, "epoch",
           lambda v: is_integer(v) and 1 <= v <= max(progress["epoch"], 1),
           f"an integer in 1..{progress['epoch']}")
    _field(record, where, "step", lambda v: is_integer(v) and 0 <= v <= progress["step"],
           f"an integer in 0..{progress['step']}")
    _field(record, where, "loss", _is_finite, "a finite number")
    for name in ("lr", "train_accuracy", "dev_accuracy", "seconds"):
        _field(record, where, name, lambda v: v is None or _is_number(v), "a number")


def _validated_params(params: dict, config: TrainConfig) -> dict:
    """Exactly the tensors of ``param_shapes`` for the configuration's network on 784
    inputs (a perceptron's: shapes chained from 784 through ``config.hidden`` to 10
    classes), in ``config.dtype``, finite; returned in layer order."""
    expected = param_shapes(config.network_layers(), FEATURES)
    extra = sorted(set(params) - set(expected))
    missing = sorted(set(expected) - set(params), key=lambda k: (int(k[1:]), k))
    if extra or missing:
        raise ValueError("parameters must be exactly "
                         f"{', '.join(expected)} for the network {config.describe_network()}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unexpected {', '.join(extra)}" if extra else ""))
    for name, shape in expected.items():
        _check_array(params[name], f"params/{name}", shape, config.dtype)
    return {name: params[name] for name in expected}


def _check_array(value, name: str, shape, dtype: str) -> None:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} is a folder of tensors, not a tensor")
    if value.dtype != np.dtype(dtype):
        raise ValueError(f"{name} is {value.dtype}; the configuration says {dtype}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} holds NaN or infinite values")


def _validated_opt_state(opt: dict, params: dict, config: TrainConfig, progress) -> dict:
    """``t`` plus, per the optimizer, ``m`` and ``v`` shaped like the parameters."""
    slots = {"sgd": (), "momentum": ("m",), "adam": ("m", "v")}[config.optimizer]
    expected = {"t", *slots}
    if set(opt) != expected:
        raise ValueError(f"optimizer state of {config.optimizer} must be "
                         f"{', '.join('opt/' + k for k in sorted(expected))}; found "
                         f"{', '.join('opt/' + k for k in sorted(opt)) or 'none'}")
    if isinstance(opt["t"], np.ndarray) and opt["t"].shape == (1,):
        opt["t"] = opt["t"].reshape(())  # as multinet 0.1 wrote it
    _check_array(opt["t"], "opt/t", (), config.dtype)
    # t counts the updates; float32 counts exactly up to 2**24.
    if progress["step"] <= 2**24 and float(opt["t"]) != progress["step"]:
        raise ValueError(f"opt/t is {float(opt['t']):g} but progress.step is "
                         f"{progress['step']}")
    for slot in slots:
        tree = opt[slot]
        if not isinstance(tree, dict) or set(tree) != set(params):
            raise ValueError(f"opt/{slot} must hold one tensor per parameter "
                             f"({', '.join(params)})")
        for name, value in params.items():
            _check_array(tree[name], f"opt/{slot}/{name}", value.shape, config.dtype)
    return opt
