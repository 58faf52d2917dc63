"""The backend registry: names, precedence, lazy imports and clear errors."""

import ast
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import multinet
from multinet.errors import BackendUnavailable, UnknownBackend
from multinet.registry import backend_names, describe_backends, get_backend, resolve_name

REPO = Path(__file__).resolve().parent.parent
ARRAY_LIBRARIES = ("numpy", "cupy", "jax", "jaxlib", "array_api_strict", "torch", "mlx")


def run_python(code, **env):
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_builtin_backends_are_registered():
    assert {"numpy", "jax", "cupy", "strict", "torch", "mlx"} <= set(backend_names())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownBackend, match="unknown backend 'tensorflow'.*numpy.*strict"):
        get_backend("tensorflow")


def test_precedence_argument_then_environment_then_numpy(monkeypatch):
    monkeypatch.delenv("MULTINET_BACKEND", raising=False)
    assert resolve_name(None) == "numpy"
    monkeypatch.setenv("MULTINET_BACKEND", "strict")
    assert resolve_name(None) == "strict"
    assert resolve_name("jax") == "jax"
    assert get_backend().name == "strict"


def test_choosing_numpy_imports_no_other_array_library():
    result = run_python("""
        import sys
        from multinet.registry import get_backend
        get_backend("numpy")
        print(sorted(m for m in ("jax", "cupy", "array_api_strict", "torch", "mlx")
                     if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


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


def test_missing_package_says_what_to_install(monkeypatch):
    from multinet.backends import cupy as cupy_backend

    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(BackendUnavailable, match=r"pip install 'multinet\[cuda12\]'"):
        cupy_backend.load()


def test_cupy_without_cuda_device_says_so(monkeypatch):
    from multinet.backends import cupy as cupy_backend

    class CUDARuntimeError(RuntimeError):
        pass

    def no_device():
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    runtime = types.SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=no_device)
    fake = types.SimpleNamespace(__version__="14.0.0", cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(BackendUnavailable, match="CuPy 14.0.0 is installed but no CUDA device"):
        cupy_backend.load()


def test_describe_backends_reports_every_backend_with_a_reason_when_unavailable():
    rows = {row["name"]: row for row in describe_backends()}
    assert set(rows) == set(backend_names())
    assert rows["numpy"]["available"] and rows["numpy"]["version"]
    for row in rows.values():
        assert row["available"] == (row["reason"] is None)


def test_a_third_party_backend_registers_through_entry_points(tmp_path):
    (tmp_path / "toy_backend.py").write_text(textwrap.dedent("""
        import dataclasses
        from multinet.registry import get_backend

        def load():
            return dataclasses.replace(get_backend("numpy"), name="toy")
    """))
    dist = tmp_path / "toy_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[multinet.backends]\ntoy = toy_backend:load\n")
    result = run_python("""
        from multinet.registry import backend_names, get_backend
        print("toy" in backend_names(), get_backend("toy").name)
    """, PYTHONPATH=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "toy"]


def test_top_level_package_exports_the_public_functions():
    for name in ("init_params", "forward", "predict", "loss_and_grads", "sgd_step",
                 "get_backend"):
        assert callable(getattr(multinet, name))
