"""The rules of docs/architecture.md, checked against the code's own imports (``ast``): the
layer table names every module once, imports go down (or across) the layers and never
round in a loop, only the entry points import the package face, and only the backends
(and the bench's peers) import an array library."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = REPO / "docs" / "architecture.md"
#: Libraries that are array libraries (or build graphs of one), not the host's NumPy.
ARRAY_LIBRARIES = ("jax", "jaxlib", "cupy", "cupyx", "torch", "mlx", "array_api_strict",
                   "ndonnx", "onnx", "onnxruntime", "spox", "tensorflow", "dask")
#: The modules allowed to import one: the backends, and the bench's native peers.
ARRAY_LIBRARY_HOMES = ("backends/", "multinet/peers/")
ENTRY_POINTS = ("multinet/__init__.py", "multinet/__main__.py")


def source_files() -> list[str]:
    """Every module of the package, as a path from the repository's root."""
    return sorted(str(path.relative_to(REPO)) for folder in ("multinet", "backends")
                  for path in (REPO / folder).rglob("*.py"))


def layers() -> dict[str, int]:
    """Module path -> layer number, from the table of docs/architecture.md; a folder
    entry (``multinet/training/``) covers every module in it."""
    entries = {}
    for line in ARCHITECTURE.read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s[^|]*\|([^|]*)\|", line)
        if match:
            for path in re.findall(r"`([^`]+)`", match.group(2)):
                entries[path] = int(match.group(1))
    found = {}
    for path in source_files():
        owners = [entry for entry in entries
                  if path == entry or (entry.endswith("/") and path.startswith(entry))]
        if len(owners) == 1:
            found[path] = entries[owners[0]]
    return found


def module_path(name: str) -> str | None:
    """The file of the project's module ``name`` (``multinet.backends.numpy`` is
    ``backends/numpy.py``), or None where it is none of the project's."""
    parts = name.split(".")
    if parts[0] != "multinet":
        return None
    if parts[1:2] == ["backends"]:
        parts = parts[1:]
    folder = REPO.joinpath(*parts)
    for candidate in (folder.with_suffix(".py"), folder / "__init__.py"):
        if candidate.is_file():
            return str(candidate.relative_to(REPO))
    return None


def imports(path: str):
    """``(line, target, top_level_name)`` for every import of the file at any depth:
    ``target`` the project's file it loads (None for another library's), with
    ``from package import name`` resolved to the submodule where ``name`` is one."""
    tree = ast.parse((REPO / path).read_text(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, module_path(alias.name), alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: a relative import")
            for alias in node.names:
                submodule = module_path(f"{node.module}.{alias.name}")
                yield node.lineno, submodule or module_path(node.module), node.module


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {path: set() for path in source_files()}
    for path in graph:
        for _, target, _ in imports(path):
            if target is not None and target != path:
                graph[path].add(target)
    return graph


def test_the_table_names_every_module_once():
    table = layers()
    unplaced = [path for path in source_files() if path not in table]
    assert not unplaced, f"add these to the table of docs/architecture.md: {unplaced}"


def test_modules_import_only_their_own_layer_or_those_below():
    table = layers()
    upward = [f"{path} (layer {table[path]}) imports {target} (layer {table[target]})"
              for path, targets in edges().items() for target in targets
              if table[target] > table[path]]
    assert not upward


def test_no_modules_import_each_other_in_a_loop():
    graph, state, loops = edges(), {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                loops.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not loops, " ; ".join(" -> ".join(loop) for loop in loops)


def test_only_the_entry_points_import_the_package_face():
    face = [f"{path}:{line}" for path in source_files() if path not in ENTRY_POINTS
            for line, target, _ in imports(path) if target == "multinet/__init__.py"]
    assert not face


def test_only_the_backends_import_an_array_library():
    found = [f"{path}:{line} imports {name}" for path in source_files()
             if not path.startswith(ARRAY_LIBRARY_HOMES)
             for line, _, name in imports(path) if name.split(".")[0] in ARRAY_LIBRARIES]
    assert not found


#: What may be imported inside a function rather than at the top, and why: optional
#: extras (a missing one is one line naming the extra), and the HTTP stack where a file
#: is downloaded (150 ms that a run with its data on disk does not pay). The backends
#: and the peers import their array libraries inside functions, so that choosing one
#: imports no other; the entry points keep ``import multinet`` and the command's start
#: light (tests/test_cli.py and the package tests measure both).
LAZY_IMPORTS = {"matplotlib", "PIL", "ndonnx", "onnx", "onnxruntime", "spox", "torchvision",
                "threadpoolctl", "pillow_heif", "waitress"}
LAZY_HERE = {"multinet/download.py": {"pooch", "requests"},
             "multinet/transfer.py": {"requests", "urllib3"}}
LAZY_ANYTHING = ("backends/", "multinet/peers/", *ENTRY_POINTS)


def function_imports(path: str):
    """``(line, top_level_name)`` of every import inside a function of the file."""
    tree = ast.parse((REPO / path).read_text(), path)
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    yield from ((node.lineno, a.name.split(".")[0]) for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    yield node.lineno, (node.module or "").split(".")[0]


def test_imports_stand_at_the_top_unless_a_reason_keeps_them_in():
    inside = [f"{path}:{line} imports {name} inside a function"
              for path in source_files() if not path.startswith(LAZY_ANYTHING)
              for line, name in function_imports(path)
              if name not in LAZY_IMPORTS | LAZY_HERE.get(path, set())]
    assert not inside


def test_no_module_outgrows_one_responsibility():
    """A module past 450 lines holds more than one idea; the command's entry module, which
    only parses and reports, stays under 250."""
    lengths = {path: len((REPO / path).read_text().splitlines()) for path in source_files()}
    limits = {path: 250 if path == "multinet/cli.py" else 450 for path in lengths}
    assert {path: n for path, n in lengths.items() if n > limits[path]} == {}


@pytest.mark.parametrize("path", ["multinet/network.py", "multinet/optim.py"])
def test_the_network_and_the_optimizers_take_their_namespace_from_the_arrays(path):
    libraries = {name.split(".")[0] for _, _, name in imports(path)}
    assert libraries <= {"__future__", "math", "dataclasses", "array_api_compat",
                         "multinet"}, libraries


def test_the_checks_fail_on_the_faults_they_look_for(tmp_path, monkeypatch):
    """A loop, an upward import, the face and an array library, planted in a copy of the
    table's world: each rule reports it (so none of them passes by never looking)."""
    table = layers()
    # network.py (layer 1) importing the registry (layer 2) goes up and closes no loop;
    # registry importing initializers, which imports registry, is a loop.
    monkeypatch.setattr(sys.modules[__name__], "imports", _planted(imports))
    with pytest.raises(AssertionError, match="network.py"):
        test_modules_import_only_their_own_layer_or_those_below()
    with pytest.raises(AssertionError, match="registry.py -> multinet/initializers.py"):
        test_no_modules_import_each_other_in_a_loop()
    with pytest.raises(AssertionError, match="checks.py"):
        test_only_the_entry_points_import_the_package_face()
    with pytest.raises(AssertionError, match="heap.py.* imports torch"):
        test_only_the_backends_import_an_array_library()
    monkeypatch.setattr(sys.modules[__name__], "function_imports",
                        lambda path: [(1, "numpy")] if path == "multinet/data.py" else [])
    with pytest.raises(AssertionError, match="data.py:1 imports numpy inside a function"):
        test_imports_stand_at_the_top_unless_a_reason_keeps_them_in()
    assert table["multinet/network.py"] < table["multinet/registry.py"]


def _planted(real):
    extra = {"multinet/network.py": [(1, "multinet/registry.py", "multinet.registry")],
             "multinet/registry.py": [(1, "multinet/initializers.py", "multinet.initializers")],
             "multinet/checks.py": [(1, "multinet/__init__.py", "multinet")],
             "multinet/heap.py": [(1, None, "torch")]}

    def planted(path):
        yield from real(path)
        yield from extra.get(path, [])

    return planted
