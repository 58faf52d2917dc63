"""Checkpoints: safetensors for the arrays (no pickle: loading runs no code), JSON for
everything else, in one file, written atomically.

A checkpoint holds the parameters, the optimizer state, the configuration (preset and
every hyperparameter), where the run is (epoch, batch within it, step, and the loss and
accuracy sums of the epoch in progress), the history of metrics, how the shuffling is
seeded, the checksums of the data it was trained on, and, once training has ended, the
results measured on the final state (the accuracies of ``fit``'s summary). Arrays are
stored as NumPy arrays in the training dtype, so a checkpoint written on one backend
loads on any other.

Writing: every array is checked to be finite first (a diverged state is never written
over a good one), then the whole file is built in memory (``safetensors.numpy.save``) and
written through ``multinet.files.write_atomic``: the file on disk is the previous
checkpoint or the new one, never a mixture, and at most one temporary file per writing
process can be left by a kill, which the next save removes.

Reading (``load``) trusts nothing: the metadata is checked against the schema below and
every tensor against it, and any difference is one ``CheckpointError`` naming it.

Schema (``multinet-checkpoint/1``): the safetensors header's ``"multinet"`` entry is a
JSON object with

* ``format``: ``"multinet-checkpoint/1"``;
* ``config``: exactly the fields of ``TrainConfig``, each of its type and range;
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

Tensors: exactly ``params/W1 .. params/Wk`` and ``params/b1 .. params/bk`` with ``k =
len(config.hidden) + 1``, ``Wi`` of shape ``(n_{i-1}, n_i)`` and ``bi`` of ``(n_i,)``,
``n_0 = 784`` (28 x 28 pixels: every dataset multinet knows), ``n_1 .. n_{k-1} =
config.hidden`` and ``n_k = 10`` classes; the optimizer's state, ``opt/t`` (a scalar equal
to the step count) plus ``opt/m/<param>`` for momentum and Adam and ``opt/v/<param>`` for
Adam, each shaped like its parameter; all in ``config.dtype``, all finite.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as to_bytes

from multinet._version import __version__
from multinet.catalog import CLASSES, DATASETS, FILES, identify
from multinet.checks import is_integer
from multinet.data import IMAGE_SHAPE, Dataset
from multinet.errors import DatasetError, MultinetError, argument
from multinet.files import OutputError, not_of_kind, reason, rescue_path, write_atomic
from multinet.initializers import to_backend
from multinet.registry import Backend
from multinet.training.config import TrainConfig
from multinet.training.state import Saved, TrainState

FORMAT = "multinet-checkpoint/1"
#: Inputs of the first layer: 28 x 28 pixels, the image size of every dataset in
#: ``multinet.catalog.DATASETS``.
FEATURES = math.prod(IMAGE_SHAPE)
#: What ``results`` may hold besides ``step``: the measured part of ``fit``'s summary.
RESULTS = ("train_accuracy", "dev_accuracy", "test_accuracy", "train_samples",
           "samples_per_second")


class CheckpointError(MultinetError):
    """A checkpoint file is missing, unreadable, not a multinet checkpoint or not a valid
    one; or a state is not fit to be written as one."""


@dataclass
class Checkpoint:
    config: TrainConfig
    params: dict          # NumPy
    opt_state: dict       # NumPy, nested like the optimizer's state
    metadata: dict

    @property
    def dataset(self) -> str:
        return self.metadata["dataset"]["name"]

    @property
    def results(self) -> dict:
        """What was measured on the saved state (``RESULTS``); empty for a checkpoint
        written during training, or by an older multinet."""
        return {k: v for k, v in self.metadata.get("results", {}).items() if k in RESULTS}

    def state_on(self, backend: Backend) -> TrainState:
        """A ``TrainState`` with every array moved to ``backend``."""
        backend.enable_dtype(self.config.dtype)
        progress = self.metadata["progress"]

        def move(tree):
            return {k: move(v) if isinstance(v, dict) else backend.asarray(v)
                    for k, v in tree.items()}

        return TrainState(params=to_backend(self.params, backend), opt_state=move(self.opt_state),
                          epoch=progress["epoch"], batch=progress["batch"],
                          step=progress["step"], seconds=progress["seconds"],
                          history=list(self.metadata.get("history", [])),
                          loss_sum=progress.get("loss_sum"),
                          accuracy_sum=progress.get("accuracy_sum"))


def _flatten(prefix: str, tree: dict, out: dict, backend: Backend) -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            _flatten(f"{prefix}{key}/", value, out, backend)
        else:
            # (np.ascontiguousarray would turn the 0-d step count into shape (1,).)
            out[f"{prefix}{key}"] = np.asarray(backend.to_numpy(value), order="C")


def _host_float(value) -> float:
    return float(np.asarray(value))


def encode(config: TrainConfig, state: TrainState, *, backend: Backend, dataset_name: str,
           dataset_sha256: dict, dataset_samples: dict | None = None,
           summary: dict | None = None) -> bytes:
    """The checkpoint file's bytes. Raises ``CheckpointError`` if any array holds a NaN
    or an infinity: such a state is never written.

    ``dataset_sha256`` and ``dataset_samples`` say what the run was trained on (see the
    schema); ``summary``, ``fit``'s, adds its ``RESULTS`` when it describes this state
    (its ``iterations`` are the state's step)."""
    tensors: dict = {}
    _flatten("params/", state.params, tensors, backend)
    _flatten("opt/", state.opt_state, tensors, backend)
    bad = [name for name, value in tensors.items() if not np.all(np.isfinite(value))]
    if bad:
        raise CheckpointError(f"not saved: {', '.join(bad[:3])} hold(s) NaN or infinite "
                              "values (the run diverged)")
    progress = {"epoch": state.epoch, "batch": state.batch, "step": state.step,
                "seconds": state.seconds}
    if state.batch and state.loss_sum is not None and state.accuracy_sum is not None:
        progress.update(loss_sum=_host_float(backend.to_numpy(state.loss_sum)),
                        accuracy_sum=_host_float(backend.to_numpy(state.accuracy_sum)))
    metadata = {
        "format": FORMAT,
        "multinet_version": __version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backend": backend.name,
        "config": config.to_dict(),
        "progress": progress,
        "rng": {"init": f"numpy default_rng({config.seed})",
                "split": f"numpy default_rng({config.seed}).permutation",
                "epoch_order": f"numpy default_rng([{config.seed}, epoch]).permutation",
                "next": {"epoch": state.epoch, "batch": state.batch}},
        "dataset": {"name": dataset_name, "content_sha256": dataset_sha256,
                    **({"samples": dataset_samples} if dataset_samples else {})},
        "history": state.history,
    }
    if summary is not None and summary.get("iterations") == state.step:
        metadata["results"] = {"step": state.step,
                               **{k: summary[k] for k in RESULTS if k in summary}}
    return to_bytes(tensors, metadata={"multinet": json.dumps(metadata)})


def save(path, config: TrainConfig, state: TrainState, *, backend: Backend,
         dataset_name: str, dataset_sha256: dict, dataset_samples: dict | None = None,
         summary: dict | None = None) -> Path:
    """Write the checkpoint (``encode``) to ``path`` atomically; the previous file stays
    intact if anything fails. Raises ``CheckpointError`` for a state that is not finite
    and ``multinet.files.OutputError`` (an ``OSError``) when the file cannot be written."""
    path = Path(path)
    data = encode(config, state, backend=backend, dataset_name=dataset_name,
                  dataset_sha256=dataset_sha256, dataset_samples=dataset_samples,
                  summary=summary)
    try:
        return write_atomic(path, data)
    except OSError as exc:
        raise OutputError(f"cannot write the checkpoint {path}: {reason(exc)}",
                          cause=reason(exc)) from None


def rescuing(save, target) -> Callable[[TrainState], Saved]:
    """For ``train(on_interrupt=...)``: ``save(path, state)`` to ``target``, and where that
    cannot be written (a read-only working folder, a full disk), to a new file in the
    system's temporary folder; the result says where the state went and why there."""
    target = Path(target)

    def on_interrupt(state: TrainState) -> Saved:
        try:
            return Saved(Path(save(target, state)))
        except OSError as exc:
            fallback = rescue_path()
            save(fallback, state)
            return Saved(fallback, f"{target} could not be written: {reason(exc)}")

    return on_interrupt


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


def load(path) -> Checkpoint:
    """Read and validate a checkpoint into host memory (NumPy arrays); any problem is one
    ``CheckpointError`` naming the file and what is wrong (a special file, never opened,
    or another kind of file, by name: ``multinet.files.not_of_kind``)."""
    path = Path(path)
    if (wrong := not_of_kind(path, "checkpoint")) or not path.is_file():
        raise CheckpointError(f"{path}: {wrong or 'no such checkpoint file'}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError, MemoryError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file "
                              f"({str(exc).splitlines()[0][:200] if str(exc) else exc!r})"
                              ) from None
    try:
        metadata = json.loads(header["multinet"])
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise KeyError("format")
    except (KeyError, TypeError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: not a multinet checkpoint (no valid multinet "
                              "metadata)") from None
    try:
        return _validated(metadata, tensors)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a valid multinet checkpoint: {exc}") from None


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


def _validated(metadata: dict, tensors: dict) -> Checkpoint:
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
    return Checkpoint(config=config, params=params, opt_state=opt_state, metadata=metadata)


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
    """Exactly W1..Wk, b1..bk, chained shapes from 784 inputs through ``config.hidden`` to
    10 classes, in ``config.dtype``, finite; returned in layer order."""
    sizes = (FEATURES, *config.hidden, CLASSES)
    layers = len(sizes) - 1
    expected = {f"{kind}{i}": shape for i in range(1, layers + 1)
                for kind, shape in (("W", (sizes[i - 1], sizes[i])), ("b", (sizes[i],)))}
    extra = sorted(set(params) - set(expected))
    missing = sorted(set(expected) - set(params), key=lambda k: (int(k[1:]), k))
    if extra or missing:
        raise ValueError("parameters must be exactly "
                         f"{', '.join(expected)} for sizes {'-'.join(map(str, sizes))}"
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


def describe_training_data(sha256: dict, name: str) -> str:
    """The training data ``sha256`` (a checkpoint's ``content_sha256``, or
    ``multinet.data.content_sha256s``) identifies, in words: ``"mnist's training
    files"``, or a subset or data of one's own, with the start of its images' checksum."""
    images, labels = sha256.get("train_images"), sha256.get("train_labels")
    if images is None or labels is None:
        return "data whose checksums it does not record"
    if (identify(images), identify(labels)) == ((name, "train_images"),
                                                (name, "train_labels")):
        return f"{name}'s training files"
    return f"a subset or data of your own, images SHA-256 {images[:12]}..."


def check_training_data(recorded: dict, dataset: Dataset, sha256: dict) -> None:
    """``DatasetError`` unless ``dataset``'s training images and labels (``sha256``, from
    ``multinet.data.content_sha256s``) are those a checkpoint ``recorded``: a run resumed
    on other data would go on as if nothing had changed. The test set is not compared:
    it plays no part in training."""
    if all(recorded.get(role) == sha256[role] for role in ("train_images", "train_labels")):
        return
    raise DatasetError(
        f"the checkpoint was trained on {describe_training_data(recorded, dataset.name)}, "
        f"not on these {len(dataset.train_labels)} training images "
        f"({describe_training_data(sha256, dataset.name)}); {argument('resume')} continues "
        f"a run only on the images and labels it was trained on")
