"""Writing files (``multinet/files.py``): a line appended after one a crash cut off
starts on its own line. Atomic writes, their temporary files and the umask are checked
through checkpoints, in test_checkpoint.py; outputs refused before the work, through the
command, in test_cli_train.py."""

import json

from multinet import files


def test_a_metrics_line_cut_off_by_a_crash_does_not_swallow_the_next(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    files.append_line(path, json.dumps({"epoch": 3}))
    assert path.read_text().splitlines()[-1] == '{"epoch": 3}'
