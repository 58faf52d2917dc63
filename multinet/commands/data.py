"""``multinet data``: where the dataset's files are (``where``), whether they are the
dataset's (``verify``), and downloading them (``fetch``)."""

from __future__ import annotations

import sys

from multinet import catalog, data
from multinet.commands import options
from multinet.download import fetch
from multinet.errors import MultinetError

DESCRIPTION = ("where: which files would be used; verify: check their contents against the "
               "known SHA-256; fetch: download into the cache (or --data-dir) from the "
               "mirrors, verifying each file. Exit status 2, with one line of error, when "
               "nothing is found, a file does not verify or a download fails.")


def add_arguments(parser) -> None:
    """The action (``where``, ``verify`` or ``fetch``) and the data options."""
    parser.add_argument("action", choices=("where", "verify", "fetch"),
                        metavar="{where,verify,fetch}")
    options.add_data_options(parser, sources=False)


def run(args) -> int:
    """The action's report; a ``MultinetError`` when nothing is found, a file does not
    verify or a download fails."""
    args.dataset = args.dataset or "mnist"
    spec = catalog.dataset_spec(args.dataset)
    if args.action == "fetch":
        if args.offline:
            raise MultinetError("'multinet data fetch' downloads; it cannot run --offline")
        target = data.explicit_dir(args.data_dir)
        files = fetch(args.dataset, target, mirrors=args.mirror,
                      progress=sys.stderr.isatty())
        print(f"{spec.name}: {len(files)} files in {next(iter(files.values())).parent}")
        return 0
    if args.action == "where":
        print(f"{spec.name}: searched, in order:")
        for directory in data.search_dirs(spec, args.data_dir):
            files = data.find_files(directory)
            print(f"  {directory}{'  <- used' if files else ''}")
            if files:
                for path in files.values():
                    print(f"    {path}")
                return 0
        raise data.not_found_error(spec, data.search_roots(spec, args.data_dir))
    return _verify(args, spec)


def _verify(args, spec) -> int:
    files = data.locate(args.dataset, args.data_dir)
    checks = data.verify_files(files, args.dataset)
    others = sorted({c.belongs_to[0] for c in checks.values()
                     if c.belongs_to and c.belongs_to[0] != spec.name})
    for check in checks.values():
        whose = check.belongs_to and f"{check.belongs_to[0]}'s {check.belongs_to[1]}"
        note = f"  ({whose or check.problem})" if whose or check.problem else ""
        label = ("ok" if check.ok else "other" if check.belongs_to
                 and check.belongs_to[0] in others else "MISMATCH")
        print(f"{label:<8} {check.path}{note}")
    damaged = sum(not c.ok and not (c.belongs_to and c.belongs_to[0] in others)
                  for c in checks.values())
    problems = []
    if others:  # good files of another dataset: not a reason to delete anything
        problems.append(f"files in {files['train_images'].parent} belong to "
                        f"{' and '.join(others)}, not {spec.name}: pass --dataset {others[0]}, "
                        f"or --data-dir a folder of {spec.name}'s files")
    if damaged:
        problems.append(f"{damaged} file(s) damaged or unknown: delete the files marked "
                        f"MISMATCH and run 'multinet data fetch --dataset {spec.name}'")
    if problems:
        raise MultinetError("; ".join(problems))
    return 0
