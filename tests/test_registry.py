"""The backend registry (``multinet/registry.py``): names, precedence, third-party
backends by entry point, lazy imports and clear errors."""

import dataclasses
import json
import textwrap

import pytest

from helpers import assert_one_line_error, run_cli, run_python
from multinet.errors import BackendUnavailable, UnknownBackend
from multinet.network import ARRAY_API_VERSION
from multinet.registry import (backend_names, check_standard, describe_backends,
                               get_backend, resolve_backend, resolve_name)


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


def test_a_name_neither_registered_nor_in_the_module_form_imports_nothing():
    """``--backend this`` must not run the module ``this`` (it prints the Zen of Python):
    only registered names and ``module://NAME`` are imported."""
    result = run_cli("train", "--backend", "this")
    assert_one_line_error(result, "unknown backend 'this'", "numpy", "torch", "module://")
    assert result.stdout == ""
    imported = run_python("""
        import sys
        from multinet.errors import UnknownBackend
        from multinet.registry import get_backend
        try:
            get_backend("this")
        except UnknownBackend:
            print("this" in sys.modules)
    """)
    assert imported.stdout.strip() == "False", imported.stderr


def _plugin(tmp_path, body):
    """A third-party backend ``odd``, registered by entry point, whose ``load`` is ``body``."""
    (tmp_path / "odd_backend.py").write_text(textwrap.dedent(body))
    dist = tmp_path / "odd_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: odd-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[multinet.backends]\nodd = odd_backend:load\n")
    return {"PYTHONPATH": str(tmp_path)}


def test_a_backend_that_fails_to_start_is_listed_with_the_reason(tmp_path):
    """A library that half works (JAX asserting inside when JAX_PLATFORMS names a platform
    it skips) is a reason in ``multinet backends``, and one line from ``train``."""
    env = _plugin(tmp_path, """
        def load():
            assert False, "no platform could start"
    """)
    listed = run_cli("backends", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    odd = next(row for row in json.loads(listed.stdout) if row["name"] == "odd")
    assert not odd["available"]
    assert odd["reason"] == ("backend 'odd' failed to start: AssertionError: no platform "
                             "could start")
    assert_one_line_error(run_cli("train", "--backend", "odd", env=env),
                          "backend 'odd' failed to start: AssertionError")


def test_a_namespace_older_than_the_network_needs_is_refused_naming_both_versions():
    old = dataclasses.replace(get_backend("numpy"), array_api_version="2022.12")
    for check in (check_standard, resolve_backend):
        with pytest.raises(BackendUnavailable, match=(
                rf"backend 'numpy' \(.*\) implements the array API standard 2022\.12; "
                rf"multinet's network needs {ARRAY_API_VERSION} or later")):
            check(old)
    current = dataclasses.replace(old, array_api_version=ARRAY_API_VERSION)
    assert check_standard(current) is current
    undeclared = dataclasses.replace(old, xp=object(), array_api_version=None)
    assert undeclared.array_api_version is None and check_standard(undeclared) is undeclared


def test_the_standard_version_defaults_to_what_the_namespace_declares():
    numpy = get_backend("numpy")
    assert numpy.array_api_version == numpy.xp.__array_api_version__


def test_a_library_at_an_older_standard_is_one_line_before_any_work():
    pytest.importorskip("array_api_strict")
    env = {"ARRAY_API_STRICT_API_VERSION": "2022.12"}
    assert_one_line_error(run_cli("train", "--backend", "strict", env=env),
                          "implements the array API standard 2022.12",
                          f"needs {ARRAY_API_VERSION} or later")
    listed = run_cli("backends", "--json", env=env)
    strict = next(row for row in json.loads(listed.stdout) if row["name"] == "strict")
    assert not strict["available"] and "2022.12" in strict["reason"]


def test_a_name_that_is_no_str_is_named():
    """``get_backend(3)`` was an ``AttributeError`` from deep inside."""
    from multinet.errors import InvalidArgument

    for name in (3, b"numpy", ["numpy"]):
        with pytest.raises(InvalidArgument, match="name must be a backend's name"):
            get_backend(name)
