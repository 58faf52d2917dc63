"""Checkpoints: safetensors for the arrays (no pickle: loading runs no code), JSON for
everything else, in one file, written atomically.

A checkpoint holds the parameters, the optimizer state, the configuration (preset and
every hyperparameter), where the run is (epoch, batch within it, step), the history of
metrics, how the shuffling is seeded, and the checksums of the dataset it was trained on.
Arrays are stored as NumPy arrays in the training dtype, so a checkpoint written on one
backend loads on any other.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multinet.errors import MultinetError
from multinet.initializers import to_backend
from multinet.registry import Backend
from multinet.train import TrainConfig, TrainState

FORMAT = "multinet-checkpoint/1"


class CheckpointError(MultinetError):
    """A checkpoint file is missing, unreadable or not a multinet checkpoint."""


@dataclass
class Checkpoint:
    config: TrainConfig
    params: dict          # NumPy
    opt_state: dict       # NumPy, nested like the optimizer's state
    metadata: dict

    @property
    def dataset(self) -> str:
        return self.metadata["dataset"]["name"]

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
                          history=list(self.metadata.get("history", [])))


def _flatten(prefix: str, tree: dict, out: dict, backend: Backend) -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            _flatten(f"{prefix}{key}/", value, out, backend)
        else:
            out[f"{prefix}{key}"] = np.ascontiguousarray(backend.to_numpy(value))


def save(path, config: TrainConfig, state: TrainState, *, backend: Backend,
         dataset_name: str, dataset_sha256: dict) -> Path:
    """Write the checkpoint to ``path`` atomically (a temporary file, then a rename)."""
    from safetensors.numpy import save_file

    import multinet

    path = Path(path)
    tensors: dict = {}
    _flatten("params/", state.params, tensors, backend)
    _flatten("opt/", state.opt_state, tensors, backend)
    metadata = {
        "format": FORMAT,
        "multinet_version": multinet.__version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backend": backend.name,
        "config": config.to_dict(),
        "progress": {"epoch": state.epoch, "batch": state.batch, "step": state.step,
                     "seconds": state.seconds},
        "rng": {"init": f"numpy default_rng({config.seed})",
                "split": f"numpy default_rng({config.seed}).permutation",
                "epoch_order": f"numpy default_rng([{config.seed}, epoch]).permutation",
                "next": {"epoch": state.epoch, "batch": state.batch}},
        "dataset": {"name": dataset_name, "content_sha256": dataset_sha256},
        "history": state.history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"multinet": json.dumps(metadata)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _unflatten(tensors: dict, prefix: str) -> dict:
    tree: dict = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        *parents, leaf = name[len(prefix):].split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def load(path) -> Checkpoint:
    """Read a checkpoint into host memory (NumPy arrays)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        metadata = json.loads(header["multinet"])
        if metadata.get("format") != FORMAT:
            raise KeyError("format")
        config = TrainConfig(**metadata["config"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a multinet checkpoint (no valid multinet "
                              "metadata)") from None
    # Stored arrays keep their sort order; put parameters back in layer order.
    params = _unflatten(tensors, "params/")
    params = {k: params[k] for k in sorted(params, key=lambda k: (int(k[1:]), k[0] != "W"))}
    return Checkpoint(config=config, params=params, opt_state=_unflatten(tensors, "opt/"),
                      metadata=metadata)
