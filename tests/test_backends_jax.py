"""The jax backend (``backends/jax.py``) where JAX only half works: a ``JAX_PLATFORMS``
that names a platform with no device or plugin here is a one-line reason, in
``multinet backends`` and from ``train``, never JAX's traceback."""

import importlib.util
import json

import pytest

from helpers import assert_one_line_error, run_cli

pytest.importorskip("jax")

#: Without a CUDA plugin JAX can never start its cuda platform, GPU or not.
CUDA_PLUGIN = any(importlib.util.find_spec(name) for name in
                  ("jax_cuda12_plugin", "jax_cuda13_plugin"))
needs_no_cuda_plugin = pytest.mark.skipif(CUDA_PLUGIN, reason="a CUDA plugin for JAX is "
                                          "installed here: JAX_PLATFORMS=cuda may work")
NO_CUDA = {"JAX_PLATFORMS": "cuda"}


@needs_no_cuda_plugin
def test_backends_lists_jax_as_unavailable_with_the_reason():
    result = run_cli("backends", "--json", env=NO_CUDA)
    assert result.returncode == 0, result.stderr
    jax = next(row for row in json.loads(result.stdout) if row["name"] == "jax")
    assert not jax["available"]
    assert "found no usable device for JAX_PLATFORMS='cuda'" in jax["reason"]
    assert "set JAX_PLATFORMS=cpu" in jax["reason"] and "\n" not in jax["reason"]
    listed = run_cli("backends", env=NO_CUDA)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr


@needs_no_cuda_plugin
def test_train_on_jax_stops_with_one_line():
    assert_one_line_error(run_cli("train", "--backend", "jax", env=NO_CUDA),
                          "found no usable device for JAX_PLATFORMS='cuda'",
                          "set JAX_PLATFORMS=cpu")


@needs_no_cuda_plugin
def test_jax_numpy_by_its_module_name_gives_the_same_reason():
    # JAX fails here with an AssertionError that has no message: the reason is JAX's.
    assert_one_line_error(run_cli("train", "--backend", "module://jax.numpy", env=NO_CUDA),
                          "module 'jax.numpy'",
                          "found no usable device for JAX_PLATFORMS='cuda'",
                          "set JAX_PLATFORMS=cpu")


def test_a_platform_jax_does_not_know_is_one_line():
    assert_one_line_error(run_cli("train", "--backend", "jax",
                                  env={"JAX_PLATFORMS": "no_such_platform"}),
                          "JAX_PLATFORMS='no_such_platform'", "no_such_platform")
