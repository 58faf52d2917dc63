"""How a run shows its progress (``multinet/training/progress.py``): where stderr is a log,
a plain line every ``LINE_SECONDS`` seconds saying the step, the share done, the time and
the last log point's loss; a run shorter than that writes none. ``multinet train`` as a
user runs it, with its stderr in a pipe, is in test_cli_train.py."""

import io
import re

import pytest

import multinet
from helpers import SAMPLE_MNIST, mnist_slice, run_python
from multinet.training import progress
from multinet.training.progress import Lines, duration


class Clock:
    """``time.perf_counter`` that moves only when told."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    return fake


def test_a_line_every_interval_with_the_step_the_time_and_the_last_log(clock, capsys):
    lines = Lines(total=500, initial=0, desc="train [numpy]", batches=1)
    clock.now += 4
    lines.update(60)
    assert capsys.readouterr().err == ""  # sooner than LINE_SECONDS after the start
    lines.update(50)
    lines.set_postfix(loss="0.6103", dev="0.8120")
    clock.now += 10
    lines.update(10)
    assert capsys.readouterr().err == (
        "multinet: train [numpy]: step 120/500 (24%), 14 s elapsed, about 44 s left; at "
        "step 110: loss 0.6103, dev accuracy 0.8120\n")
    clock.now += 5
    lines.update(10)
    assert capsys.readouterr().err == ""  # the next one LINE_SECONDS after the last


def test_a_minibatch_run_resumed_names_its_epoch_and_times_this_session(clock, capsys):
    """Resumed at step 3,000 of 4,610 (461 batches an epoch): the time left is estimated
    from this session's pace, not from steps done before it."""
    lines = Lines(total=4610, initial=3000, desc="train [jax]", batches=461)
    clock.now += 130
    lines.update(1000)
    assert capsys.readouterr().err == (
        "multinet: train [jax]: epoch 9/10, step 4000/4610 (86%), 2 min 10 s elapsed, "
        "about 1 min 19 s left\n")


@pytest.mark.parametrize("seconds, shown", [(0.4, "0 s"), (59.4, "59 s"), (61, "1 min 01 s"),
                                            (3725, "1 h 02 min")])
def test_durations_read_as_a_person_says_them(seconds, shown):
    assert duration(seconds) == shown


def test_fit_with_lines_writes_whole_lines_to_stderr_and_no_bar(mnist, capsys, monkeypatch):
    monkeypatch.setattr(progress, "LINE_SECONDS", 0)
    multinet.fit(mnist_slice(mnist, 1200, 100), iterations=6, log_every=2, dev_size=200,
                 progress="lines")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [int(re.search(r"step (\d+)/6 ", line)[1]) for line in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[-1].startswith("multinet: train [numpy]: step 6/6 (100%), ")
    # The line of step 6 comes before its log point: it shows the log point before.
    assert re.search(r"; at step 4: loss \d\.\d{4}, dev accuracy \d\.\d{4}$", lines[-1])
    assert "at step 2: loss" in lines[2] and "at step" not in lines[0]


def test_fit_into_a_log_writes_lines_as_the_command_line_does():
    """``multinet.fit(...)`` with stderr in a pipe (``python script.py 2> log``): plain
    lines, no bar frames, without asking for ``progress="lines"``."""
    result = run_python(f"""
        from multinet import fit, load_dataset
        from multinet.training import progress
        progress.LINE_SECONDS = 0
        data = load_dataset(data_dir={str(SAMPLE_MNIST)!r}, verify=False)
        fit(data, iterations=3, log_every=3, dev_size=200)
    """)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "it/s" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"multinet: train [numpy]: step {step}/3" for step in (1, 2, 3)], result.stderr


@pytest.mark.parametrize(("progress_", "terminal", "shown"), [
    (True, True, "bar"), (True, False, "lines"), (progress.BAR, False, "bar"),
    (progress.LINES, True, "lines"), (False, True, "nothing")])
def test_progress_true_is_a_bar_only_where_it_redraws_in_place(monkeypatch, progress_,
                                                                terminal, shown):
    stderr = io.StringIO()
    stderr.isatty = lambda: terminal
    monkeypatch.setattr(progress.sys, "stderr", stderr)
    display = progress.progress_display(progress_, total=4, initial=0, desc="train",
                                        batches=1)
    kind = ("lines" if isinstance(display, Lines)
            else "nothing" if display.disable else "bar")
    display.close()
    assert kind == shown


def test_a_log_that_goes_away_stops_the_lines_not_the_run(clock, monkeypatch):
    """stderr a closed pipe: the write fails once, then no more lines are tried; the run
    is not stopped as if its checkpoint could not be written."""
    class ClosedPipe:
        writes = 0

        def write(self, text):
            ClosedPipe.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(progress.sys, "stderr", ClosedPipe())
    lines = Lines(total=100, initial=0, desc="train [numpy]", batches=1)
    for _ in range(3):
        clock.now += 11
        lines.update(1)
    assert ClosedPipe.writes == 1 and lines.n == 3
