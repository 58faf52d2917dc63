"""Fixtures shared by the suite: backends x dtypes as parameters, and the MNIST files.

Every registered backend is a parameter, available or not. One that cannot run here is
*skipped with its reason* (visible under ``pytest -rs``), never dropped silently.

JAX note: float64 on JAX needs its process-wide 64-bit mode. The ``float64`` cases turn
it on through ``backend.enable_dtype`` (multinet never does it on import); JAX's float32
results do not depend on that mode, since multinet passes explicit dtypes everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from multinet.data import find_files, load_dataset
from multinet.errors import BackendUnavailable
from multinet.registry import backend_names, get_backend

REPO = Path(__file__).resolve().parent.parent
#: Where CI and the developers' machines keep the real MNIST files.
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
DTYPES = ("float32", "float64")


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
    except BackendUnavailable as exc:
        return None, str(exc)


def backend_params(dtypes=DTYPES):
    """``pytest.param((backend_name, dtype))`` for every backend x dtype, with readable ids
    (``jax-cpu-float32``) and a skip mark, with the reason, where the pair cannot run."""
    params = []
    for name in backend_names():
        backend, reason = _backend_or_reason(name)
        device = backend.platform if backend else "unavailable"
        for dtype in dtypes:
            marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason else []
            params.append(pytest.param((name, dtype), id=f"{name}-{device}-{dtype}", marks=marks))
    return params


@pytest.fixture(params=backend_params())
def backend_dtype(request):
    """``(backend, dtype)`` for every backend and float dtype; float64 enabled where needed."""
    name, dtype = request.param
    backend = get_backend(name)
    try:
        backend.enable_dtype(dtype)
    except BackendUnavailable as exc:
        pytest.skip(f"{name} cannot use {dtype}: {exc}")
    return backend, dtype


@pytest.fixture(params=backend_params(("float32",)))
def backend(request):
    """Every backend, float32 only: for tests where the dtype does not matter."""
    return get_backend(request.param[0])


def mnist_dir() -> Path | None:
    chosen = os.environ.get("MULTINET_DATA")
    candidates = [Path(chosen)] if chosen else [SHARED_MNIST]
    return next((c for c in candidates if find_files(c)), None)


@pytest.fixture(scope="session")
def mnist():
    directory = mnist_dir()
    if directory is None:
        pytest.skip(f"MNIST files not found: set MULTINET_DATA (looked in {SHARED_MNIST})")
    return load_dataset(directory)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
