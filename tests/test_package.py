"""The package face (``multinet/__init__.py``): what ``help(multinet)`` shows, the names
it hands on, and that ``import multinet`` imports nothing until a name is used."""

import pydoc
import subprocess
import sys

import pytest

import helpers
import multinet


def test_help_lists_and_explains_the_api():
    text = pydoc.render_doc(multinet, renderer=pydoc.plaintext)
    for name in ("load_dataset", "fit", "load", "Run", "init_params", "backend_names"):
        assert name in text
    assert "__getattr__" not in text
    for name in multinet.__all__:
        assert getattr(multinet, name).__doc__, name
    for name in ("predict", "probabilities", "evaluate", "save", "plot_curves",
                 "plot_predictions", "plot_confusion"):
        assert getattr(multinet.Run, name).__doc__, name
    for function in (multinet.Run.predict, multinet.Run.probabilities):
        assert "(n, 28, 28)" in function.__doc__ and "uint8" in function.__doc__
    for function in (multinet.load_dataset, multinet.fit, multinet.load,
                     multinet.Run.predict, multinet.Run.save, multinet.init_params):
        assert "Raises" in function.__doc__, function.__name__


def test_top_level_package_exports_the_public_functions():
    for name in ("init_params", "forward", "predict", "loss_and_grads", "sgd_step",
                 "get_backend"):
        assert callable(getattr(multinet, name))


def test_a_name_multinet_lacks_is_an_attribute_error():
    """``hasattr(multinet, "a.b")`` raised ModuleNotFoundError: the name was looked up
    as a submodule's, ``multinet.a.b``."""
    for name in ("nonexistent", "a.b", "fit.x", "", "Run.predict", "_SOURCES.x"):
        assert not hasattr(multinet, name), name
    with pytest.raises(AttributeError, match="module 'multinet' has no attribute 'nope'"):
        multinet.nope  # noqa: B018


def test_importing_multinet_imports_nothing_and_its_api_no_array_library():
    """``import multinet`` imports neither NumPy nor any module of multinet (the command
    imports the package before it can catch a Ctrl-C); the API's names bring NumPy, the
    host's arrays, but no backend's array library, no optional extra, and no HTTP stack
    until a file is downloaded."""
    code = ("import sys, multinet\n"
            "print(sorted(m for m in sys.modules if m == 'numpy' or m == 'tqdm'\n"
            "             or m.startswith('multinet.') and m not in ('multinet._version', "
            "'multinet.backends')))\n"
            "multinet.fit, multinet.Run, multinet.load, multinet.load_dataset\n"
            f"multinet.load_dataset(data_dir={str(helpers.SAMPLE_MNIST)!r}, verify=False)\n"
            "print(sorted(m for m in ('jax', 'torch', 'mlx', 'cupy', 'array_api_strict', "
            "'matplotlib', 'PIL', 'onnx', 'ndonnx', 'pooch', 'requests') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "[]"], result.stdout
