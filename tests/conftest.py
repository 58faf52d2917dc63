"""Fixtures shared by the suite: backends x devices x dtypes as parameters, the MNIST
files (full, or the committed sample), and what several test modules start from: a short
run, a small checkpoint, a network trained to read pictures, the made-up datasets and
their mirror, and guards that no work starts.

Every registered backend is a parameter, available or not, on each kind of device it
offers (``Backend.device_choices``: torch on CUDA, MPS and the CPU where present), and
so is an unregistered library reached by its import name through the generic backend
(``GENERIC``). One that cannot run here is *skipped with its reason* (visible under
``pytest -rs``), never dropped silently.

JAX note: float64 on JAX needs its process-wide 64-bit mode. The ``float64`` cases turn
it on through ``backend.enable_dtype`` (multinet never does it on import); JAX's float32
results do not depend on that mode, since multinet passes explicit dtypes everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import helpers
import multinet
from helpers import (OTHER, SAMPLE_MNIST, TINY, TINY_FILES, mnist_slice, small,
                     train_and_save, write_files)
from mirror import running_mirror
from multinet import checkpoint as ckpt
from multinet import download
from multinet.catalog import DATASETS
from multinet.catalog import ENV_VAR as DATA_ENV_VAR
from multinet.data import load_dataset, locate
from multinet.errors import BackendUnavailable, DatasetError, UnknownBackend
from multinet.registry import DTYPES, backend_names, get_backend
from multinet.training.config import TrainConfig
from multinet.training.loop import train

#: Libraries tested by import name, with no registered backend: the generic path.
GENERIC = ("module://array_api_strict",)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true",
                     help="also run tests marked slow (full-size training runs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: full-size run, opt in with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --- Backends, devices and dtypes -------------------------------------------------------

def _backend_or_reason(name):
    try:
        return get_backend(name), None
    except (BackendUnavailable, UnknownBackend) as exc:
        return None, str(exc)


def backend_params(dtypes=DTYPES):
    """``pytest.param((backend_name, device, dtype))`` for every backend x device x dtype,
    with readable ids (``jax-cpu-float32``, ``torch-cuda-float64``) and a skip mark, with
    the reason, where the backend cannot run. ``device`` is a kind from
    ``Backend.device_choices``, or None for a backend with one device."""
    params = []
    for name in (*backend_names(), *GENERIC):
        backend, reason = _backend_or_reason(name)
        devices = ((backend.device_choices or (None,)) if backend else (None,))
        for device in devices:
            shown = device or (backend.platform if backend else "unavailable")
            for dtype in dtypes:
                marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason else []
                params.append(pytest.param((name, device, dtype),
                                           id=f"{name}-{shown}-{dtype}", marks=marks))
    return params


def _configured(name, device):
    try:
        return get_backend(name).configured(device)
    except BackendUnavailable as exc:
        pytest.skip(f"{name} on {device}: {exc}")


@pytest.fixture(params=backend_params())
def backend_dtype(request):
    """``(backend, dtype)`` for every backend, device and float dtype; float64 enabled
    where needed, skipped with the reason where the backend refuses it."""
    name, device, dtype = request.param
    backend = _configured(name, device)
    try:
        backend.enable_dtype(dtype)
    except BackendUnavailable as exc:
        pytest.skip(f"{name} cannot use {dtype}: {exc}")
    return backend, dtype


@pytest.fixture(params=backend_params(("float32",)))
def backend(request):
    """Every backend and device, float32 only: for tests where the dtype does not matter."""
    return _configured(*request.param[:2])


# --- Data -------------------------------------------------------------------------------

def full_mnist_dir() -> Path | None:
    """The folder of the full MNIST files, found the way ``multinet train`` finds them
    (``$MULTINET_DATA``, the per-user cache, system folders), or None.

    An explicit ``MULTINET_DATA`` that lacks the files is a mistake worth a failure, not
    a quiet fall-back to the sample."""
    try:
        return locate("mnist")["train_images"].parent
    except DatasetError as exc:
        if os.environ.get(DATA_ENV_VAR):
            raise pytest.UsageError(f"{DATA_ENV_VAR} is set but {exc}") from None
        return None


@pytest.fixture(scope="session")
def full_mnist():
    """All 70,000 MNIST images, for the few tests that need every one of them."""
    directory = full_mnist_dir()
    if directory is None:
        pytest.skip(f"needs the full MNIST files (set {DATA_ENV_VAR}, or run 'multinet "
                    "data fetch'); the committed sample holds 2,560 images")
    return load_dataset(data_dir=directory)


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST images: the full files where they are found, else the committed sample
    (the first 2,048 training and 512 test images, tests/data/mnist-sample). Pass
    ``helpers.data_args(mnist)`` to the CLI so either is read correctly."""
    directory = full_mnist_dir()
    if directory is None:
        return load_dataset(data_dir=SAMPLE_MNIST, verify=False)
    return load_dataset(data_dir=directory)


@pytest.fixture(scope="module")
def sample():
    """The committed sample (2,048 training and 512 test images), whatever ``mnist`` is."""
    return load_dataset(data_dir=helpers.SAMPLE_MNIST, verify=False)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# --- Runs, checkpoints and networks several modules start from --------------------------

@pytest.fixture(scope="module")
def short_run(mnist):
    """A 20-step notebook run on a slice of MNIST, numpy."""
    return multinet.fit(small(mnist), iterations=20, dev_size=200, log_every=5,
                        progress=False)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory, mnist):
    """Two epochs of the notebook's net on 600 images (NumPy), saved."""
    config = TrainConfig.from_preset("notebook", epochs=2, dev_size=200)
    return train_and_save(tmp_path_factory.mktemp("small"), "small", config, get_backend("numpy"),
                          helpers.mnist_slice(mnist, 600, 100))


@pytest.fixture(scope="session")
def cnn_checkpoint(tmp_path_factory, mnist):
    """Two epochs of a tiny convolutional network (``helpers.TINY_CNN`` with the cnn
    preset's hyperparameters, batches of 50 at lr 0.01) on 600 images (NumPy), saved:
    about 60% test accuracy."""
    config = TrainConfig.from_preset("cnn", layers=helpers.TINY_CNN, batch_size=50, epochs=2,
                                     lr=0.01, dev_size=100)
    return train_and_save(tmp_path_factory.mktemp("cnn"), "cnn", config, get_backend("numpy"),
                          helpers.mnist_slice(mnist, 600, 100))


#: Test digits per variant (the ``network`` fixture's test images).
DIGITS = 200


@pytest.fixture(scope="module", params=[
    "small",
    pytest.param("mlp-preset", marks=pytest.mark.slow),
])
def network(request, mnist, tmp_path_factory):
    """``(checkpoint path, loaded checkpoint, test digits, labels)``.

    ``small``: the mlp architecture trained here for two epochs on the first 2,048
    training images (all the committed sample holds). ``mlp-preset``: the ``mlp``
    preset on the full training set (slow; the full-size measurement)."""
    if request.param == "small":
        data = mnist_slice(mnist, 2048, DIGITS)
        config = TrainConfig.from_preset("mlp", epochs=2, dev_size=48, log_every=2)
    else:
        data = mnist_slice(request.getfixturevalue("full_mnist"), 60000, DIGITS)
        config = TrainConfig.from_preset("mlp")
    numpy = get_backend("numpy")
    result = train(config, numpy, data, progress=False)
    path = ckpt.save(tmp_path_factory.mktemp("pictures") / f"{request.param}.safetensors",
                     config, result.state, backend=numpy, dataset_name="mnist",
                     dataset_sha256={})
    return path, ckpt.load(path), data.test_images, data.test_labels


# --- Guards -----------------------------------------------------------------------------

@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any data is loaded or any training starts."""
    import multinet.api.fitting as fitting
    import multinet.commands.inputs as inputs

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the outputs were checked")

    monkeypatch.setattr(inputs, "load_data", forbidden)
    monkeypatch.setattr(fitting, "train", forbidden)


# --- Made-up datasets and their mirror --------------------------------------------------

@pytest.fixture(scope="module")
def mirror():
    """The made-up ``tiny`` served on 127.0.0.1 (tests/mirror.py), in every mode."""
    with running_mirror(TINY_FILES, hang_seconds=5.0, trickle_pause=0.05) as running:
        yield running


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """The made-up datasets registered, an empty cache, no data or mirrors from outside,
    and no pause between retries."""
    monkeypatch.setitem(DATASETS, "tiny", TINY)
    monkeypatch.setitem(DATASETS, "other", OTHER)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MULTINET_DATA", raising=False)
    monkeypatch.delenv("MULTINET_MIRRORS", raising=False)
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)


@pytest.fixture
def unreadable(tmp_path, monkeypatch):
    """A folder holding the tiny files whose entries cannot be looked at (chmod 000): the
    per-user cache's folder, ``$XDG_CACHE_HOME/multinet``."""
    folder = write_files(tmp_path / "cache" / "multinet", TINY_FILES)
    if os.geteuid() != 0:
        folder.chmod(0)
        yield folder
        folder.chmod(0o755)
        return
    real_stat = os.stat

    def stat_as_a_user(path, *args, **kwargs):
        if folder in Path(os.fsdecode(path)).parents:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_as_a_user)
    yield folder
