"""``multinet backends``: every registered backend, whether it can run here (and why
not), its version and devices; with ``--probe MODULE``, any library checked against every
call multinet makes, then its parity."""

from __future__ import annotations

import json

from multinet.checks import describe_device
from multinet.commands import options
from multinet.probe import probe, worst_level
from multinet.registry import describe_backends

DESCRIPTION = ("List every registered backend: whether it can run here (and why not), its "
               "version and its devices. With --probe: check any module against every call "
               "multinet makes, then its parity. Exits 1 if the probe finds a problem.")


def add_arguments(parser) -> None:
    """``--probe`` and ``--json``."""
    parser.add_argument("--probe", metavar="MODULE",
                        help="import name of a library to check, function by function "
                             "(array_api_strict, or a module of your own)")
    options.add_json_option(parser)


def run(args) -> int:
    """The list of backends; with ``--probe``, the probe's report (1 if it found a
    problem)."""
    if args.probe is not None:
        return _probe(args)
    rows = describe_backends()
    for row in rows:  # as a run's summary names them (a backend lists what it likes)
        row["devices"] = [describe_device(device) for device in row["devices"]]
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        if row["available"]:
            print(f"{row['name']:<8} available    {row['version']:<10} "
                  f"{', '.join(row['devices'])}")
        else:
            print(f"{row['name']:<8} unavailable  {row['reason']}")
    print("any other array-API library: --backend module://IMPORT_NAME (multinet backends "
          "--probe IMPORT_NAME checks it)")
    return 0


def _probe(args) -> int:
    result = probe(args.probe)
    if args.json:
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    print(f"probe of {args.probe} (namespace {result['namespace']}): "
          + ("every call multinet makes works" if not result["findings"]
             else f"{len(result['findings'])} problem(s)"))
    for line in result["findings"]:
        print(line)
    for row in result["parity"]:
        detail = (f"worst level {worst_level(row)}" if "errors" in row else row["reason"])
        print(f"{'parity':<9} {row['dtype']}: {row['verdict']}: {detail}")
    return 0 if result["ok"] else 1
