"""The machine a bench ran on (``multinet/machine.py``): its report names the processor
and the BLAS."""

from pathlib import Path

import pytest


def test_the_report_names_the_processor_and_the_blas():
    from multinet.machine import describe_machine, machine

    m = machine()
    assert m["cpu"]["model"] and m["cpu"]["model"] != "x86_64" or not Path(
        "/proc/cpuinfo").exists()
    assert m["versions"]["numpy"] and m["usable_cpus"] >= 1
    pytest.importorskip("threadpoolctl")
    assert any(pool.get("user_api") == "blas" for pool in m["numpy_threads"])
    assert m["cpu"]["model"] in describe_machine(m)[0]


def test_a_mesh_of_devices_is_described_in_words_not_as_its_object():
    from multinet.checks import describe_device

    class Mesh:  # the shape of jax.sharding.Mesh: axis name -> size, and its devices
        shape = {"batch": 4}
        devices = [0, 1, 2, 3]

        def __str__(self):
            return "Mesh('batch': 4, axis_types=(Auto,))"

    assert describe_device(Mesh(), "cpu") == "4 CPU devices (mesh batch=4)"
    assert describe_device("cuda:0", "gpu") == "cuda:0"


class StrictDevice:  # array_api_strict.Device: its repr is its str
    def __str__(self):
        return "array_api_strict.Device('CPU_DEVICE')"


class MlxDevice:
    def __str__(self):
        return "Device(gpu, 1)"


class JaxDevice:
    platform, id = "gpu", 3

    def __str__(self):
        return "CudaDevice(id=3)"


@pytest.mark.parametrize(("device", "named"), [
    (StrictDevice(), "CPU_DEVICE"), (MlxDevice(), "gpu:1"), (JaxDevice(), "gpu:3"),
    ("array_api_strict.Device('CPU_DEVICE')", "CPU_DEVICE"), ("cpu", "cpu"),
    ("cpu:0 (cpu)", "cpu:0 (cpu)"), ("<CUDA Device 0>", "<CUDA Device 0>")])
def test_a_device_is_named_as_a_reader_names_it_not_by_its_repr(device, named):
    from multinet.checks import describe_device

    assert describe_device(device) == named


def test_a_jax_mesh_is_described_in_words():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    from multinet.checks import describe_device
    from multinet.registry import get_backend

    backend = get_backend("jax").data_parallel(1)
    assert backend.device_count == 1
    assert describe_device(backend.device, backend.platform) == (
        f"1 {jax.devices()[0].platform.upper()} device (mesh batch=1)")


def test_the_machine_is_described_within_100_columns():
    from multinet.machine import WIDTH, describe_machine, machine

    assert WIDTH == 100 and all(len(line) <= WIDTH for line in describe_machine(machine()))
