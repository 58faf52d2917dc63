"""The network (``multinet/network.py``): shapes, dtypes and namespaces of every public
function, on every backend; and a module that imports no array library and never asks
which backend it runs on."""

import ast
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import array_namespace

from helpers import run_python
from multinet import forward, init_params, loss_and_grads, predict, sgd_step, train_step
from multinet.initializers import draw_params, to_host
from multinet.network import ARRAY_API_VERSION, layer_sizes

SIZES = [(784, 10, 10), (784, 32, 16, 10), (5, 3)]

REPO = Path(__file__).resolve().parent.parent

ARRAY_LIBRARIES = ("numpy", "cupy", "jax", "jaxlib", "array_api_strict", "torch", "mlx")


def batch(backend, dtype, rng, n=7, features=784, classes=10):
    x = backend.asarray(rng.random((n, features)), dtype)
    y = backend.asarray(rng.integers(0, classes, n), "int32")
    return x, y


def assert_on_backend(backend, array, shape, dtype=None):
    assert array_namespace(array) is array_namespace(backend.asarray(np.zeros(1, np.float32)))
    assert tuple(array.shape) == shape
    if dtype is not None:
        assert array.dtype == backend.dtype(dtype)


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(map(str, s)))
def test_init_params_shapes_dtypes_and_keys(backend_dtype, sizes):
    backend, dtype = backend_dtype
    params = init_params(sizes, seed=0, backend=backend, dtype=dtype)
    assert list(params) == [k for i in range(1, len(sizes)) for k in (f"W{i}", f"b{i}")]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        assert_on_backend(backend, params[f"W{i}"], (fan_in, fan_out), dtype)
        assert_on_backend(backend, params[f"b{i}"], (fan_out,), dtype)
    assert layer_sizes(params) == sizes


def test_every_backend_starts_from_the_same_weights(backend_dtype):
    backend, dtype = backend_dtype
    host = to_host(init_params((784, 10, 10), seed=3, backend=backend, dtype=dtype), backend)
    for key, reference in draw_params((784, 10, 10), seed=3).items():
        np.testing.assert_array_equal(host[key], reference.astype(dtype))


def test_notebook_init_is_uniform_minus_half_to_half():
    params = draw_params((784, 10, 10), seed=0)
    values = np.concatenate([v.ravel() for v in params.values()])
    assert -0.5 <= values.min() < -0.45 and 0.45 < values.max() < 0.5


def test_he_init_scales_with_fan_in_and_zeroes_biases():
    params = draw_params((784, 256, 10), seed=0, init="he")
    assert abs(params["W1"].std() - np.sqrt(2 / 784)) < 0.002
    assert not params["b1"].any() and not params["b2"].any()


@pytest.mark.parametrize("sizes", [(0, 10), (784,), ()])
def test_init_params_rejects_impossible_sizes(sizes):
    with pytest.raises(ValueError, match="sizes"):
        draw_params(sizes, seed=0)


def test_forward_predict_loss_grads_step(backend_dtype, rng):
    backend, dtype = backend_dtype
    params = init_params((784, 10, 10), seed=0, backend=backend, dtype=dtype)
    x, y = batch(backend, dtype, rng)

    assert_on_backend(backend, forward(params, x), (7, 10), dtype)
    labels = predict(params, x)
    assert_on_backend(backend, labels, (7,))
    assert set(backend.to_numpy(labels).tolist()) <= set(range(10))

    loss, grads = loss_and_grads(params, x, y)
    assert_on_backend(backend, loss, (), dtype)
    assert np.isfinite(float(backend.to_numpy(loss)))
    assert list(grads) == list(params)
    for key in params:
        assert_on_backend(backend, grads[key], tuple(params[key].shape), dtype)

    before = to_host(params, backend)
    updated = sgd_step(params, grads, 0.1)
    assert list(updated) == list(params)
    for key in params:
        assert_on_backend(backend, updated[key], tuple(params[key].shape), dtype)
        np.testing.assert_array_equal(backend.to_numpy(params[key]), before[key])  # no mutation


def test_compiled_train_step_matches_the_pieces(backend_dtype, rng):
    backend, dtype = backend_dtype
    params = init_params((784, 16, 10), seed=1, backend=backend, dtype=dtype)
    x, y = batch(backend, dtype, rng, n=33)
    new_params, loss, acc = backend.compile(train_step)(params, x, y, 0.5)
    ref_loss, grads = loss_and_grads(params, x, y)
    expected = sgd_step(params, grads, 0.5)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(loss), backend.to_numpy(ref_loss), rtol=rtol)
    for key in params:
        np.testing.assert_allclose(backend.to_numpy(new_params[key]),
                                   backend.to_numpy(expected[key]), rtol=rtol, atol=rtol)
    assert 0.0 <= float(backend.to_numpy(acc)) <= 1.0


# --- The standard it needs ----------------------------------------------------------------

def _adam_steps_on_strict(api_version, steps=3):
    """Train ``steps`` Adam steps (updated in place, as on a mutable backend) with
    array-api-strict set to ``api_version`` of the standard; the last loss."""
    array_api_strict = pytest.importorskip("array_api_strict")
    from multinet import optim
    from multinet.training.steps import make_step

    def put(array, dtype):
        return array_api_strict.asarray(np.asarray(array, dtype=dtype))

    rng = np.random.default_rng(0)
    with array_api_strict.ArrayAPIStrictFlags(api_version=api_version):
        params = {k: put(v, "float32") for k, v in init_params((20, 8, 6, 5), seed=0).items()}
        x, y = put(rng.random((16, 20)), "float32"), put(rng.integers(0, 5, 16), "int32")
        optimizer = optim.Optimizer(name="adam", weight_decay=0.01)
        state = optim.init_state(optimizer, params)
        step = make_step(optimizer, in_place=True)
        for _ in range(steps):
            params, state, loss, _ = step(params, state, x, y, 0.01)
        assert all(v.dtype == array_api_strict.float32 for v in params.values())
        return float(loss)


def test_the_network_runs_on_the_oldest_standard_it_declares():
    """``ARRAY_API_VERSION`` is what a training step needs: it runs there (no Python
    scalar in ``where``, which came with 2024.12) ..."""
    assert np.isfinite(_adam_steps_on_strict(ARRAY_API_VERSION))


def test_the_standard_before_the_declared_one_does_not_suffice():
    """... and not on the version before it (2022.12's ``sum`` turns float32 into float64),
    so the declared version is no older and no newer than the code needs."""
    with pytest.raises(TypeError, match="float64"):
        _adam_steps_on_strict("2022.12")


# --- No backend in the network's code ---------------------------------------------------

def test_network_module_imports_no_array_library():
    source = (REPO / "multinet" / "network.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert not imported & set(ARRAY_LIBRARIES), imported
    result = run_python("""
        import sys
        import multinet.network
        print(sorted(m for m in %r if m in sys.modules))
    """ % (ARRAY_LIBRARIES,))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_network_module_never_asks_which_backend_it_runs_on():
    tree = ast.parse((REPO / "multinet" / "network.py").read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                words.add(node.value)
    suspicious = {w for w in words for lib in ARRAY_LIBRARIES + ("strict", "backend")
                  if lib in w.lower()}
    assert not suspicious | (words & {"name", "__name__", "__module__"})
