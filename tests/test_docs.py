"""Every fenced ```python block of README.md and docs/*.md runs, so the docs cannot drift
from the code.

The blocks of one file run in order in one namespace (a page reads top to bottom), in a
fresh folder, with figures drawn off-screen. A block that cannot run in the test suite
(it needs a GPU, say) is marked, visibly, by this comment on the line just above its
opening fence::

    <!-- docs-test: skip: needs an NVIDIA GPU -->

and is reported as skipped with that reason (``pytest -rs``). Use it sparingly. A block
that needs a backend or an optional package missing here skips the rest of its page, with
the reason.

The docs load MNIST as a reader would (``multinet.load_dataset("mnist")``). Where the
suite has only the committed sample (see ``tests/data/mnist-sample``), that one call,
with no ``data_dir``, reads the sample instead, with ``verify=False`` because its
checksums are not MNIST's; nothing else is substituted.
"""

import re
from pathlib import Path

import pytest

import multinet
from helpers import is_sample
from multinet.errors import BackendUnavailable

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip:\s*(?P<reason>.+?)\s*-->\s*$")


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, source, skip_reason)`` of each ```python block; ``line`` is the 1-based
    line of the block's first line of code."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() in ("```python", "```py"):
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            marker = SKIP.match(lines[i - 1].strip()) if i else None
            blocks.append((start + 1, "\n".join(lines[start:end]),
                           marker["reason"] if marker else None))
            i = end
        i += 1
    return blocks


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


RUN = [p for p in PAGES if any(reason is None for _, _, reason in python_blocks(p))]
MARKED = [pytest.param(p, line, reason, id=f"{name(p)}:{line}")
          for p in PAGES for line, _, reason in python_blocks(p) if reason]


def test_the_readme_has_python_blocks_and_every_fence_is_found():
    assert python_blocks(ROOT / "README.md")
    for page in PAGES:
        fences = sum(line.strip() in ("```python", "```py")
                     for line in page.read_text().splitlines())
        assert len(python_blocks(page)) == fences, name(page)


@pytest.fixture
def readers_folder(mnist, tmp_path, monkeypatch):
    """A fresh working folder, off-screen figures, and MNIST where ``load_dataset``
    finds it (the sample, read unverified, where that is all there is)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if not is_sample(mnist):
        monkeypatch.setenv("MULTINET_DATA", str(mnist.directory))
        return
    real = multinet.data.load_dataset

    def load_dataset(name="mnist", data_dir=None, **options):
        if name == "mnist" and data_dir is None:
            return real(name, mnist.directory, **{**options, "verify": False})
        return real(name, data_dir, **options)

    monkeypatch.setattr(multinet, "load_dataset", load_dataset)
    monkeypatch.setattr(multinet.data, "load_dataset", load_dataset)


@pytest.mark.filterwarnings("ignore::UserWarning:matplotlib")
@pytest.mark.parametrize("page", RUN, ids=name)
def test_python_blocks_run(page, readers_folder):
    namespace = {"__name__": "__docs__"}
    for line, source, reason in python_blocks(page):
        if reason:
            continue
        code = compile("\n" * (line - 1) + source, str(page), "exec")  # tracebacks: page lines
        try:
            exec(code, namespace)
        except BackendUnavailable as exc:
            pytest.skip(f"{name(page)}:{line}: {exc}")
        except ModuleNotFoundError as exc:  # an optional extra (onnx, Pillow), not multinet
            if (exc.name or "").partition(".")[0] == "multinet":
                raise
            pytest.skip(f"{name(page)}:{line}: needs {exc.name}, not installed here")


@pytest.mark.parametrize("page, line, reason", MARKED)
def test_python_blocks_marked_skip(page, line, reason):
    pytest.skip(f"{name(page)}:{line}: {reason}")


def test_every_extra_the_readme_names_exists_and_every_extra_is_named():
    """``pip install "multinet[X]"`` with an X that pyproject.toml lacks only warns; an
    extra the README never names (``notebook`` was one) is one nobody finds."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads TOML")
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])
    readme = (ROOT / "README.md").read_text()
    named = {extra for group in re.findall(r"(?:multinet|\.)\[([\w,-]+)\]", readme)
             for extra in group.split(",")}
    assert named <= extras, named - extras
    listed = set(re.findall(r"`([\w-]+)`", readme.split("Extras:", 1)[1].split("\n\n")[0]))
    assert extras <= listed | named, extras - listed - named



def test_every_test_the_docs_name_exists():
    """docs/*.md name the tests that keep each promise (``test_cli_train.py::name``, then
    ``::other`` for more of the same file): each must be a test that exists."""
    missing = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        current = None
        for match in re.finditer(r"`(?:tests/)?(test_\w+\.py)?(?:::(\w+))?",
                                 page.read_text(encoding="utf-8")):
            file, name = match.groups()
            current = file or current
            source = ROOT / "tests" / (current or "")
            if name and current and (not source.is_file()
                                     or f"def {name}(" not in source.read_text()):
                missing.append(f"{page.name}: {current}::{name}")
    assert not missing, missing
