"""Helpers shared by the test modules (plain functions; fixtures live in conftest.py)."""

import dataclasses
import os
import subprocess
import sys


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
