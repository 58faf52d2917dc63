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
