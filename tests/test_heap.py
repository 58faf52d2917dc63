"""multinet.heap: a training process keeps its freed memory for the next step.

Counted in page faults, not timed: a step whose temporaries are served from memory the
process already holds faults no pages in, one whose memory went back to the kernel
faults in every page of it again."""

import json
import subprocess
import sys

import pytest

import helpers
from multinet import heap
from helpers import SMALL, mnist_slice

#: ``multinet.fit`` keywords for a run of a second or two.
SMALL_FIT = {**SMALL, "epochs": 1}

GLIBC = heap._glibc() is not None

# 60 minibatch steps of the mlp preset on NumPy after 10 to warm up, in a fresh process;
# prints the minor page faults per step.
FAULTS_PER_STEP = """
import json, resource, sys
from multinet import heap, optim
from multinet.bench import BenchConfig, synthetic_data
from multinet.initializers import init_params
from multinet.registry import get_backend
from multinet.training.state import own_copy
from multinet.training.steps import make_minibatch_step
status = heap.retain_freed_memory() if sys.argv[1] == "retain" else "default"
numpy = get_backend("numpy")
data = synthetic_data(BenchConfig(samples=128 * 70))
images, labels = numpy.asarray(data["images"]), numpy.asarray(data["labels"], "int32")
adam = optim.Optimizer("adam")
params = own_copy(numpy, init_params((784, 512, 256, 10), seed=0, backend=numpy,
                                      dtype="float32", init="he"))
state = optim.init_state(adam, params)
step = make_minibatch_step(adam, in_place=True)
for i, index in enumerate(data["order"]):
    if i == 10:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    params, state, loss, accuracy = step(params, state, images, labels, index, 1e-3)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"status": status, "faults_per_step": faults / (len(data["order"]) - 10)}))
"""


def faults_per_step(mode):
    result = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode],
                            capture_output=True, text=True, timeout=300,
                            env=helpers.clean_malloc_env())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only: elsewhere heap does nothing")
def test_a_training_step_reuses_the_memory_of_the_step_before():
    default = faults_per_step("default")
    if default["faults_per_step"] < 400:
        pytest.skip(f"this glibc keeps freed memory by itself "
                    f"({default['faults_per_step']:.0f} page faults a step)")
    retained = faults_per_step("retain")
    assert retained["status"] == "retained"
    # The step's temporaries are ~7 MB (1,700 pages): all of them faulted in again each
    # step by default, all reused with the thresholds raised (a few dozen faults remain).
    assert retained["faults_per_step"] < default["faults_per_step"] / 10, (default, retained)


def test_the_users_own_malloc_settings_are_left_alone(monkeypatch):
    def refuse():
        raise AssertionError("glibc touched although the user tuned it")

    monkeypatch.setattr(heap, "_glibc", refuse)
    for environ in ({"MALLOC_TRIM_THRESHOLD_": "0"}, {"MALLOC_MMAP_THRESHOLD_": "131072"},
                    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}):
        assert heap.retain_freed_memory(environ).endswith("set by the user")
    assert heap.retain_freed_memory(
        {"GLIBC_TUNABLES": "glibc.rtld.nns=2:glibc.malloc.mmap_threshold=131072"}
    ) == "GLIBC_TUNABLES glibc.malloc.mmap_threshold set by the user"
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    # Other settings, malloc's own included, are no reason to leave the thresholds alone:
    # as MALLOC_ARENA_MAX, so glibc.malloc.arena_max.
    for environ in ({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, {"MALLOC_ARENA_MAX": "2"},
                    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0"}):
        assert heap.retain_freed_memory(environ) == "not glibc"


def test_off_glibc_nothing_is_done_and_nothing_raised(monkeypatch):
    """On Linux without glibc (musl), ``platform.libc_ver`` reads the Python binary, which
    may be gone (replaced by an upgrade): still no error, the run goes on untouched."""
    def unreadable(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", sys.executable)

    monkeypatch.setattr(heap.platform, "system", lambda: "Linux")
    monkeypatch.setattr(heap.platform, "libc_ver", unreadable)
    assert heap.retain_freed_memory({}) == "not glibc"
    heap.release_free_memory()
    monkeypatch.setattr(heap.platform, "libc_ver", lambda *args, **kwargs: ("", ""))
    assert heap.retain_freed_memory({}) == "not glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_retaining_twice_is_harmless():
    assert heap.retain_freed_memory({}) == "retained"
    assert heap.retain_freed_memory({}) == "retained"
    heap.release_free_memory()


def test_training_retains_freed_memory_and_gives_it_back_at_the_end(mnist, monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "retain_freed_memory", lambda: calls.append("retain"))
    monkeypatch.setattr(heap, "release_free_memory", lambda: calls.append("release"))
    import multinet

    multinet.fit(mnist_slice(mnist), **SMALL_FIT, progress=False)
    assert calls == ["retain", "release"]


def test_a_run_that_stops_gives_its_memory_back_too(mnist, monkeypatch):
    """Diverged (lr 1e30): the error reaches the caller, and the heap is trimmed first."""
    calls = []
    monkeypatch.setattr(heap, "release_free_memory", lambda: calls.append("release"))
    import multinet

    with pytest.raises(multinet.MultinetError):
        multinet.fit(mnist_slice(mnist), **{**SMALL_FIT, "lr": 1e30}, progress=False)
    assert calls == ["release"]
