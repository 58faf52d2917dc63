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

Reading (``load``, the file's bytes through ``decode``) trusts nothing: the metadata and
every tensor are checked against the schema (``multinet.checkpoint_schema``, which states
it), and any difference is one ``CheckpointError`` naming it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as from_bytes
from safetensors.numpy import save as to_bytes

from multinet._version import __version__
from multinet.catalog import identify
from multinet.checkpoint_schema import FORMAT, RESULTS, validated
from multinet.data import Dataset
from multinet.errors import DatasetError, MultinetError, argument
from multinet.files import OutputError, not_of_kind, reason, rescue_path, write_atomic
from multinet.initializers import to_backend
from multinet.registry import Backend
# The inputs of the first layer, named here too for the readers of checkpoints.
from multinet.training.config import FEATURES as FEATURES
from multinet.training.config import TrainConfig
from multinet.training.state import Saved, TrainState


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


def load(path) -> Checkpoint:
    """Read and validate a checkpoint file into host memory (NumPy arrays): its bytes,
    through ``decode``.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint's file.

    Returns
    -------
    Checkpoint
        Its configuration, parameters, optimizer state and metadata.

    Raises
    ------
    CheckpointError
        One line naming the file and what is wrong: missing, a special file (never
        opened) or another kind of file (by name: ``multinet.files.not_of_kind``),
        unreadable, or not a valid checkpoint (``decode``).
    """
    path = Path(path)
    if (wrong := not_of_kind(path, "checkpoint")) or not path.is_file():
        raise CheckpointError(f"{path}: {wrong or 'no such checkpoint file'}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read: {reason(exc)}") from None
    except MemoryError:
        raise CheckpointError(f"{path}: too large to read into this machine's memory"
                              ) from None
    try:
        return decode(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def decode(data: bytes) -> Checkpoint:
    """A checkpoint from the bytes of its file (``encode``'s), validated against the
    schema (``multinet.checkpoint_schema``).

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    Checkpoint
        Its configuration, parameters, optimizer state and metadata, as NumPy arrays.

    Raises
    ------
    CheckpointError
        One line: not a safetensors file, no multinet metadata, or what differs from the
        schema (the field or the tensor, by name).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CheckpointError(f"data must be the bytes of a checkpoint file, got "
                              f"{type(data).__name__}")
    data = bytes(data)
    try:
        tensors = from_bytes(data)
    except (SafetensorError, ValueError, TypeError, MemoryError) as exc:
        raise CheckpointError(f"not a readable safetensors file "
                              f"({str(exc).splitlines()[0][:200] if str(exc) else exc!r})"
                              ) from None
    try:
        # safetensors has read the header already (its length, then JSON), so it is whole.
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size]).get("__metadata__") or {}
        metadata = json.loads(header["multinet"])
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise KeyError("format")
    except (KeyError, TypeError, ValueError, RecursionError, AttributeError):
        raise CheckpointError("not a multinet checkpoint (no valid multinet metadata)"
                              ) from None
    try:
        config, params, opt_state = validated(metadata, tensors)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise CheckpointError(f"not a valid multinet checkpoint: {exc}") from None
    return Checkpoint(config=config, params=params, opt_state=opt_state, metadata=metadata)


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
