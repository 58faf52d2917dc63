"""What the page needs to run multinet's ONNX graphs in the browser.

The page draws nothing from the internet. onnxruntime-web, the WebAssembly runtime, is
served from a folder the user names (``ort_folder`` checks it), and the graphs are
multinet's own exports (``multinet.export``), so what runs in the browser is the same
network as on every backend:

* ``inference_graph``: the served checkpoint's inference graph (``/model.onnx``);
* ``training_files``: a fresh network of the notebook preset, as a training-step graph
  with the batch fixed to a sample of the dataset (``/train/step.onnx``), an inference
  graph taking the weights as inputs ``params/W1``... (``/train/model.onnx``, for the
  network trained in the page), and ``setup.json``: the configuration, the initial
  state, and the sample (``/train/setup.json``).

The initial state is drawn as ``multinet.initializers`` draws every backend's (seed 0,
uniform), and the sample is the first images of the training set, which is
``multinet.parity.mnist_problem``'s problem: a run in the page can be checked step by
step against onnxruntime in Python and against the NumPy backend (tests/test_browser.py).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from multinet import checkpoint as ckpt
from multinet import export
from multinet.backends import onnx as onnx_backend
from multinet.catalog import CLASSES
from multinet.data import Dataset, content_sha256s, validate
from multinet.errors import MultinetError, argument
from multinet.registry import get_backend
from multinet.training.config import FEATURES, TrainConfig
from multinet.training.loop import initial_state

#: The script the page loads: onnxruntime-web's WebAssembly-only build (no WebGL or
#: WebGPU), a classic script that defines the global ``ort``.
ENTRY_SCRIPT = "ort.wasm.min.js"
#: Every file of onnxruntime-web's ``dist`` folder the page needs: the entry script loads
#: the Emscripten module (``.mjs``), which loads the WebAssembly binary. One build of
#: both serves single- and multi-threaded runs (measured with onnxruntime-web 1.30.0:
#: the page fetches exactly these three).
RUNTIME_FILES = (ENTRY_SCRIPT, "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
#: The onnxruntime-web release the page was tested with.
RUNTIME_VERSION = "1.30.0"
#: Training images (the first of the training set) and test images in the page.
SAMPLE_COUNT = 2048
TEST_COUNT = 512
#: The page's learning rate and steps: the notebook preset's (full-batch, lr 0.2) on the
#: sample, logged every ``LOG_EVERY`` steps.
ITERATIONS = 500
LOG_EVERY = 10


def ort_folder(path) -> dict[str, Path]:
    """The onnxruntime-web files the page needs, found in ``path`` or ``path/dist``.

    Parameters
    ----------
    path : str or os.PathLike
        A folder holding onnxruntime-web's ``dist`` files, or the package folder above
        it (``node_modules/onnxruntime-web``, as ``npm install onnxruntime-web`` makes).

    Returns
    -------
    dict of str to Path
        ``RUNTIME_FILES`` by name, ``ENTRY_SCRIPT`` first.

    Raises
    ------
    MultinetError
        One line naming the folder and the files missing from it.
    """
    folder = Path(path)
    for candidate in (folder, folder / "dist"):
        found = {name: candidate / name for name in RUNTIME_FILES}
        if all(file.is_file() for file in found.values()):
            return found
    if not folder.is_dir():
        raise MultinetError(f"{argument('onnxruntime', str(path))}: no such folder (give "
                            f"the onnxruntime-web folder that 'npm install "
                            f"onnxruntime-web@{RUNTIME_VERSION}' makes in node_modules)")
    where = folder / "dist" if (folder / "dist").is_dir() else folder
    missing = [name for name in RUNTIME_FILES if not (where / name).is_file()]
    raise MultinetError(f"{argument('onnxruntime', str(path))}: {where} lacks "
                        f"{', '.join(missing)} (onnxruntime-web {RUNTIME_VERSION}'s dist "
                        "files)")


def inference_graph(checkpoint_path) -> bytes:
    """The inference graph of a checkpoint file, as ``multinet export --onnx`` writes it.

    Parameters
    ----------
    checkpoint_path : str or os.PathLike
        A multinet checkpoint.

    Returns
    -------
    bytes
        The serialized ONNX model (``multinet.export.inference_model``).

    Raises
    ------
    CheckpointError
        For a file that is no valid checkpoint.
    BackendUnavailable
        Without the ``onnx`` extra.
    OutputsNotFinite
        For weights whose forward pass can overflow (``export.check_exportable``).
    """
    checkpoint = ckpt.load(checkpoint_path)
    export.check_exportable(checkpoint)
    return export.inference_model(checkpoint)


def fresh_checkpoint(sample: Dataset, iterations: int = ITERATIONS,
                     log_every: int = LOG_EVERY) -> ckpt.Checkpoint:
    """A notebook-preset float32 network before its first step, as a ``Checkpoint``:
    the state a new run starts from (``multinet.training.loop.initial_state``), encoded
    and decoded as any checkpoint file is (``multinet.checkpoint``).

    Parameters
    ----------
    sample : Dataset
        What it is to be trained on (its name and checksums go into the metadata).
    iterations, log_every : int
        The run's length and how often it is logged.

    Returns
    -------
    Checkpoint
        Seed 0, uniform initial weights (``multinet.initializers``, rounded once to
        float32), the optimizer's zeroed state, step 0.
    """
    config = TrainConfig.from_preset("notebook", epochs=iterations, log_every=log_every,
                                     dtype="float32", seed=0)
    host = get_backend("numpy")
    state = initial_state(config, host, FEATURES)
    return ckpt.decode(ckpt.encode(
        config, state, backend=host, dataset_name=sample.name,
        dataset_sha256=content_sha256s(sample),
        dataset_samples={"train": len(sample.train_labels), "test": len(sample.test_labels)}))


def _encoded(images: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).decode()


def training_files(dataset: Dataset | Callable[[], Dataset], count: int = SAMPLE_COUNT,
                   test_count: int = TEST_COUNT) -> dict[str, bytes]:
    """The files of in-browser training, for the first images of a dataset.

    Parameters
    ----------
    dataset : Dataset or callable returning one
        Where the sample comes from (a callable, such as a ``load_dataset`` call, is only
        called here, so a server reads its data when a page first asks to train).
    count, test_count : int
        Training and test images in the sample (fewer if the dataset has fewer).

    Returns
    -------
    dict of str to bytes
        ``"step.onnx"``: one SGD step (``export.training_model``) with the batch fixed to
        the sample; ``"model.onnx"``: the inference graph taking the weights as inputs
        ``params/W1``...; ``"setup.json"``: ``{"config": {"lr", "iterations",
        "log_every", "seed", "count", "test_count", "sizes", "dtype"}, "state": {name:
        {"shape", "data"}}, "images", "test_images"`` (base64 of the ``uint8`` pixels,
        image after image), ``"labels", "test_labels"}``.

    Raises
    ------
    DatasetError
        For data multinet cannot train on (``multinet.data.validate``).
    BackendUnavailable
        Without the ``onnx`` extra.
    """
    data = validate(dataset() if callable(dataset) else dataset)
    sample = dataclasses.replace(data, train_images=data.train_images[:count],
                                 train_labels=data.train_labels[:count],
                                 test_images=data.test_images[:test_count],
                                 test_labels=data.test_labels[:test_count])
    checkpoint = fresh_checkpoint(sample)
    tracer = onnx_backend.tracer()
    step = export.training_model(checkpoint, len(sample.train_labels), tracer)
    model = export.inference_model(checkpoint, tracer, weights_as_inputs=True)
    config = checkpoint.config
    state = {name: {"shape": list(value.shape), "data": value.ravel().tolist()}
             for name, value in export.state_inputs(checkpoint).items()}
    setup = {"config": {"lr": config.lr, "iterations": config.epochs,
                        "log_every": config.log_every, "seed": config.seed,
                        "count": len(sample.train_labels),
                        "test_count": len(sample.test_labels),
                        "sizes": [FEATURES, *config.hidden, CLASSES],
                        "dtype": config.dtype},
             "state": state,
             "images": _encoded(sample.train_images),
             "labels": sample.train_labels.astype(int).tolist(),
             "test_images": _encoded(sample.test_images),
             "test_labels": sample.test_labels.astype(int).tolist()}
    return {"step.onnx": step, "model.onnx": model,
            "setup.json": json.dumps(setup, separators=(",", ":")).encode()}
