"""The scripts of ``examples/`` run as their readers run them."""

import os
import subprocess
import sys
from pathlib import Path

from helpers import is_sample

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_notebook.py"


def test_the_example_script_trains_and_says_one_line_without_data(mnist, tmp_path):
    def example(*args):
        return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "MULTINET_DATA": ""})

    trained = example("--iterations", "20", "--data-dir", str(mnist.directory),
                      *(["--no-verify"] if is_sample(mnist) else []))
    assert trained.returncode == 0, trained.stderr
    assert "numpy: accuracy train" in trained.stdout and "first four test images" in trained.stdout
    missing = example("--data-dir", str(tmp_path / "nothing"))
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(lines) == 1 and "Traceback" not in missing.stderr
    assert lines[0].startswith("train_notebook.py: error: mnist files not found")
