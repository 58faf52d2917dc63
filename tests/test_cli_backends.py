"""``multinet backends`` as a user runs it: every registered backend listed, available
with its devices, or with the reason it is not. (``--probe`` is in test_probe.py.)"""

import json

from helpers import run_cli
from multinet.cli import main


def test_backends_lists_every_backend(capsys):
    assert main(["backends", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in rows}
    assert {"numpy", "jax", "cupy", "strict"} <= names
    assert main(["backends"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in names)


def test_backends_lists_torch_and_mlx_with_devices_or_the_reason():
    rows = {row["name"]: row for row in json.loads(run_cli("backends", "--json").stdout)}
    for name in ("torch", "mlx"):
        assert rows[name]["devices"] if rows[name]["available"] else rows[name]["reason"]


def test_backends_name_devices_as_a_run_summary_does_not_as_objects(capsys):
    assert main(["backends", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["strict"]["devices"] == ["CPU_DEVICE"]  # not array_api_strict.Device(...)
    assert not any("Device(" in device for row in rows.values() for device in row["devices"])
    assert main(["backends"]) == 0
    assert "Device(" not in capsys.readouterr().out
