"""The backend registry (``multinet/registry.py``): names, precedence, third-party
backends by entry point, lazy imports and clear errors."""

import textwrap

import pytest

from helpers import assert_one_line_error, run_cli, run_python
from multinet.errors import UnknownBackend
from multinet.registry import backend_names, describe_backends, get_backend, resolve_name


def test_builtin_backends_are_registered():
    assert {"numpy", "jax", "cupy", "strict", "torch", "mlx"} <= set(backend_names())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownBackend, match="unknown backend 'tensorflow'.*numpy.*strict"):
        get_backend("tensorflow")


def test_unknown_backend_is_one_line_listing_known_names():
    assert_one_line_error(run_cli("train", "--backend", "tensorflow_nonexistent"),
                          "unknown backend 'tensorflow_nonexistent'", "numpy", "torch")


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
