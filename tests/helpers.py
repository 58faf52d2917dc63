"""Helpers shared by the test modules (plain functions; fixtures live in conftest.py)."""

import contextlib
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

#: The committed sample of MNIST (see its README.md): not MNIST's checksums, so it is read
#: with ``--no-verify`` / ``verify=False``.
SAMPLE_MNIST = Path(__file__).resolve().parent / "data" / "mnist-sample"


def is_sample(dataset) -> bool:
    """Whether ``dataset`` is the committed sample rather than the full files."""
    return Path(dataset.directory).resolve() == SAMPLE_MNIST


def data_args(dataset) -> list[str]:
    """The CLI options that read ``dataset``'s files (the full ones, or the sample)."""
    return ["--data-dir", str(dataset.directory), *(["--no-verify"] if is_sample(dataset) else [])]


def load_code(dataset) -> str:
    """Python source of a ``load_dataset`` call reading ``dataset``'s files, for tests
    that run code in a fresh process."""
    return f"load_dataset(data_dir={str(dataset.directory)!r}, verify={not is_sample(dataset)})"


def run_cli(*args, env=None, timeout=600):
    """Run ``multinet`` in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "multinet", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line_error(result, *fragments):
    """Exit status 2 and exactly one line on stderr, naming every fragment; no traceback."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multinet: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def mnist_slice(dataset, n_train, n_test):
    """The first ``n_train`` training and ``n_test`` test images of a dataset."""
    return dataclasses.replace(
        dataset,
        train_images=dataset.train_images[:n_train], train_labels=dataset.train_labels[:n_train],
        test_images=dataset.test_images[:n_test], test_labels=dataset.test_labels[:n_test])


@contextlib.contextmanager
def unwritable_dir(path, *, size=None):
    """``path`` made a folder that refuses writes: read-only, or with ``size`` (bytes), a
    writable but nearly full one. As root (for whom permissions mean nothing) a tmpfs is
    mounted there; otherwise a read-only folder is a ``chmod 555`` one, and a full one
    cannot be made (skipped)."""
    import pytest

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        if size is not None:
            pytest.skip("a full disk needs a small tmpfs, which needs root")
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    options = f"size={size}" if size is not None else "ro,size=64k"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def clean_malloc_env() -> dict:
    """This process's environment less glibc's malloc settings (``multinet.heap`` leaves
    a user's own alone), so a child runs with glibc's defaults."""
    from multinet.heap import USER_SETTINGS

    return {k: v for k, v in os.environ.items()
            if k not in USER_SETTINGS and k != "GLIBC_TUNABLES"}
