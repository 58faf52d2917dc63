"""``multinet data``: where the dataset's files are (``where``), whether they are the
dataset's (``verify``), and downloading them (``fetch``)."""

from __future__ import annotations

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
        files = fetch(args.dataset, target, mirrors=args.mirror)
        print(f"{spec.name}: {len(files)} files in {next(iter(files.values())).parent}")
        return 0
    if args.action == "where":
        return _where(args, spec)
    return _verify(args, spec)


def _where(args, spec) -> int:
    """Every folder of the search, in order, with what it holds; the first with the four
    files is used, unless they are another dataset's (``train`` would refuse them)."""
    print(f"{spec.name}: the folders searched, in order (the first with all four files "
          "is used):")
    used = None
    for directory in data.search_dirs(spec, args.data_dir):
        if used is not None:
            print(f"  {directory}  (not searched: a folder above is used)")
            continue
        files = data.find_files(directory)
        if files is None:
            print(f"  {directory}  ({_holding(directory)})")
            continue
        used = directory
        owners = sorted({c.belongs_to[0] for c in data.verify_files(files, spec.name).values()
                         if c.belongs_to and c.belongs_to[0] != spec.name})
        if owners:  # the right names, another dataset's contents
            print(f"  {directory}  ({' and '.join(owners)}'s files, not {spec.name}'s)")
            raise MultinetError(_not_theirs(directory, spec.name, owners))
        print(f"  {directory}  <- used")
        for path in files.values():
            print(f"    {path}")
    if used is None:
        raise data.not_found_error(spec, data.search_roots(spec, args.data_dir))
    return 0


def _holding(directory) -> str:
    """What a folder without the four files holds: nothing, or some of them."""
    if not directory.is_dir():
        return "no such folder"
    present = sum(any((directory / name).is_file() for name in (f"{stem}.gz", stem))
                  for stem in catalog.FILES.values())
    return f"{present} of the 4 files" if present else "none of the files"


def _not_theirs(directory, name: str, owners: list[str]) -> str:
    return (f"files in {directory} belong to {' and '.join(owners)}, not {name}: pass "
            f"--dataset {owners[0]}, or --data-dir a folder of {name}'s files")


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
        problems.append(_not_theirs(files["train_images"].parent, spec.name, others))
    if damaged:
        problems.append(f"{damaged} file(s) damaged or unknown: delete the files marked "
                        f"MISMATCH and run 'multinet data fetch --dataset {spec.name}'")
    if problems:
        raise MultinetError("; ".join(problems))
    return 0
