"""Fixtures shared by the suite: backends x devices x dtypes as parameters, and the
MNIST files.

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

from helpers import SAMPLE_MNIST
from multinet.catalog import ENV_VAR as DATA_ENV_VAR
from multinet.data import load_dataset, locate
from multinet.errors import BackendUnavailable, DatasetError, UnknownBackend
from multinet.registry import DTYPES, backend_names, get_backend

#: Libraries tested by import name, with no registered backend: the generic path.
GENERIC = ("array_api_strict",)


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


def _backend_or_reason(name):
    try:
        return get_backend(name), None
    except (BackendUnavailable, UnknownBackend) as exc:  # UnknownBackend: a GENERIC module
        return None, str(exc)                           # that is not installed


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


def full_mnist_dir() -> Path | None:
    """The folder of the full MNIST files, found the way ``multinet train`` finds them
    (``$MULTINET_DATA``, the per-user cache, system folders), or None.

    An explicit ``MULTINET_DATA`` that lacks the files is a mistake worth a failure, not
    a quiet fall-back to the sample."""
    try:
        return locate(None, "mnist")["train_images"].parent
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


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
