"""The metrics file: one JSON record per log point, appended after the checkpoint of the
same state is written, so that no line describes a state that was not saved; and, for a
resumed run, which of its records the file still lacks."""

from __future__ import annotations

import json
import os

from multinet.errors import MultinetError, argument
from multinet.files import OutputError, append_line, reason
from multinet.training.state import TrainState


def logged_records(path) -> list[dict]:
    """The records at the end of a metrics file (its last 64 KiB), oldest first; lines
    that are not records (cut off by a crash, or not written by multinet) left out."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:  # no file yet
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and type(record.get("step")) is int:
            records.append(record)
    return records


def metrics_to_write_first(metrics_path, state: TrainState) -> list[dict]:
    """The records of ``state.history`` a resumed run appends to its metrics file before
    its own: those after the last one the file holds (a run killed between saving a
    checkpoint and logging its line), all of them where it holds none.

    A record is this run's when it equals one of the history's as JSON text (which keeps
    every float exactly, NaN included), not by its step: one file may hold several runs,
    each from step 1. Raises ``MultinetError`` when the record after this run's last in
    the file goes past the state's step: a run from this checkpoint (or an older copy of
    it) logged those steps already, and going on would write them a second time. A
    history that is empty (a state saved before its first log point) leaves nothing to
    tell runs apart: it goes on.
    """
    if not state.history:
        return []
    records = logged_records(metrics_path)
    # Compared as JSON text: NaN (a dev accuracy without a dev split) equals itself there.
    history = [json.dumps(r, sort_keys=True) for r in state.history]
    for i in range(len(records) - 1, -1, -1):
        if json.dumps(records[i], sort_keys=True) in history:
            break
    else:
        return list(state.history)
    after = records[i + 1:]
    if after and after[0]["step"] > state.step:
        last = after[0]["step"]
        for record in after[1:]:  # the steps of that run, up to where another begins
            if record["step"] <= last:
                break
            last = record["step"]
        steps = (f"step {last}" if last == after[0]["step"]
                 else f"steps {after[0]['step']}-{last}")
        raise MultinetError(
            f"{argument('metrics', str(metrics_path))}: already holds records up to step "
            f"{last}, past step {state.step} where the resumed checkpoint stands; going on "
            f"would write {steps} into it a second time: give the metrics another file, or "
            f"resume from the checkpoint those records came from")
    return state.history[history.index(json.dumps(records[i], sort_keys=True)) + 1:]


def append_record(metrics_path, record: dict) -> None:
    """Append ``record`` as one JSON line; ``OutputError`` saying why when it cannot."""
    try:
        append_line(metrics_path, json.dumps(record))
    except OSError as exc:
        raise OutputError(f"cannot append to the metrics file {metrics_path}: "
                          f"{reason(exc)}") from None
