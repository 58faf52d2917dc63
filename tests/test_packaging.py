"""The package as users get it: a wheel in a fresh virtual environment, and the sdist.

The top-level ``backends/`` folder is installed as ``multinet.backends``. From a checkout's
root, ``python -m multinet`` imports the checkout's ``multinet/`` rather than the installed
package, so the checkout itself must resolve ``multinet.backends`` (see
``multinet/__init__.py``); these tests install a real wheel and run from there.

Both builds run from a copy of the source tree, so nothing is written into the checkout,
and with setuptools from the test environment (no build isolation), so no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("setuptools", reason="the packaging tests build with setuptools")


def source_copy(destination: Path) -> Path:
    """The files git would ship (tracked, or new and not ignored), copied elsewhere; or
    the whole tree less caches when this is not a git checkout (an unpacked sdist)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
        files = [name for name in listed if name and (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)]
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return destination


def build(kind: str, source: Path, out: Path) -> Path:
    """Run setuptools' PEP 517 hook ``build_wheel`` or ``build_sdist`` in ``source``."""
    out.mkdir(parents=True, exist_ok=True)
    code = (f"from setuptools import build_meta; "
            f"print(build_meta.build_{kind}({str(out)!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("packaging")
    source = source_copy(root / "source")
    # As a checkout where the tests ran from tests/ holds: caches git ignores.
    for cache in (".hypothesis/examples", ".pytest_cache/v"):
        (source / "tests" / cache).mkdir(parents=True)
        (source / "tests" / cache / "entry").write_text("cached")
    return {"wheel": build("wheel", source, root / "dist"),
            "sdist": build("sdist", source, root / "dist"), "root": root}


@pytest.fixture(scope="module")
def fresh_python(built):
    """A new venv with the wheel installed and nothing else of multinet: its other
    dependencies come from this environment's site-packages through a plain path entry,
    which (unlike a site directory) does not run this environment's editable-install hook.
    That entry also shows pip this environment's multinet (a regular install of the same
    version), which pip would take as already installed: ``--ignore-installed``."""
    home = built["root"] / "venv"
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--ignore-installed", "--no-deps", "--no-index", "--no-cache-dir",
         str(built["wheel"])],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def run(python, *args, cwd):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_the_wheel_holds_the_backends_and_their_entry_points(built):
    import zipfile

    names = zipfile.ZipFile(built["wheel"]).namelist()
    assert "multinet/backends/__init__.py" in names and "multinet/backends/numpy.py" in names
    # Every module of the checkout, subpackages included (pyproject.toml lists them).
    modules = {str(path.relative_to(REPO)) for path in (REPO / "multinet").rglob("*.py")}
    modules |= {f"multinet/{path.relative_to(REPO)}" for path in (REPO / "backends").rglob("*.py")}
    assert sorted(modules - set(names)) == []
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(built["wheel"]).read(entry_points).decode()
    assert "numpy = multinet.backends.numpy:load" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_the_wheel_and_the_sdist_hold_the_pretrained_weights_byte_for_byte(built, fresh_python,
                                                                          tmp_path):
    import zipfile

    from multinet import pretrained

    shipped = (REPO / "multinet" / "weights" / pretrained.NAME).read_bytes()
    assert zipfile.ZipFile(built["wheel"]).read(f"multinet/weights/{pretrained.NAME}") == shipped
    with tarfile.open(built["sdist"]) as archive:
        member, = [m for m in archive.getmembers()
                   if m.name.split("/", 1)[-1] == f"multinet/weights/{pretrained.NAME}"]
        assert archive.extractfile(member).read() == shipped
    # Installed, the package finds them inside itself, and their SHA-256 holds.
    located = run(fresh_python, "-c", "from multinet import pretrained; print(pretrained.path())",
                  cwd=tmp_path)
    assert located.returncode == 0, located.stderr
    home = fresh_python.parent.parent.resolve()
    assert Path(located.stdout.strip()).resolve().is_relative_to(home)


@pytest.mark.parametrize("where", ["checkout root", "elsewhere"])
def test_an_installed_wheel_runs_from_the_checkout_root_and_elsewhere(fresh_python, where,
                                                                      tmp_path):
    cwd = REPO if where == "checkout root" else tmp_path
    result = run(fresh_python, "-m", "multinet", "backends", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "numpy" in result.stdout and "available" in result.stdout
    located = run(fresh_python, "-c", "import multinet.backends.numpy as m; print(m.__file__)",
                  cwd=cwd)
    assert located.returncode == 0, located.stderr
    expected = REPO / "backends" if where == "checkout root" else fresh_python.parent.parent
    assert Path(located.stdout.strip()).resolve().is_relative_to(expected.resolve())


def test_the_installed_script_runs(fresh_python, tmp_path):
    """``multinet`` as pip writes it from pyproject.toml's entry point."""
    result = run(fresh_python.parent / "multinet", "--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("multinet "), result.stderr


def test_the_suite_collects_from_the_checkout_root_with_an_installed_wheel(fresh_python):
    result = run(fresh_python, "-m", "pytest", "--collect-only", "-q", "-p",
                 "no:cacheprovider", "tests/test_network.py", cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_sdist_is_the_whole_project_and_its_tests_collect(built, fresh_python):
    with tarfile.open(built["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        archive.extractall(built["root"] / "unpacked", filter="data")
    for required in ("LICENSE", "README.md", "pyproject.toml", "backends/numpy.py",
                     "tests/conftest.py", "tests/helpers.py",
                     "tests/data/mnist-sample/train-images-idx3-ubyte.gz",
                     "tests/data/mnist-sample/README.md", "docs/parity.md",
                     "examples/train_notebook.py", "scripts/gpu-check.sh"):
        assert required in names, required
    assert not any("__pycache__" in name or name.endswith(".pyc") or ".hypothesis" in name
                   or ".pytest_cache" in name for name in names)
    unpacked = next((built["root"] / "unpacked").iterdir())
    result = run(fresh_python, "-m", "pytest", "--collect-only", "-q", "-p",
                 "no:cacheprovider", cwd=unpacked)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "error" not in result.stdout.lower().splitlines()[-1], result.stdout[-2000:]
