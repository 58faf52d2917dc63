"""Writing files so that a reader finds the old version or the new one, never a part.

A checkpoint is written whole to a temporary file beside its target, flushed to the disk
and renamed over the target (``os.replace``, atomic on POSIX and Windows), so a kill or a
full disk at any moment leaves the previous file intact. The temporary file has one
recognisable name per writing process, ``.<target>.multinet.<host>.<pid>.tmp``: a
process killed mid-write (SIGKILL, power loss) leaves at most one such file, and the next
write to the same target removes it once that process is gone. Files are created with
mode ``0o666`` less the umask, as ``open`` would create them, so a shared run folder
stays readable by the group when the umask says so.

Output paths are checked before any work starts (``check_output_file``,
``check_output_dir``, ``check_output`` for a file a command replaces, ``check_outputs``
for a training run's): a training run that can only fail at its end is refused at its
start instead. A named pipe, a socket or a device is refused from its ``stat`` alone,
never opened (a FIFO would wait for a reader); an output is never one of the command's
own inputs; and an existing file is replaced only by one of its kind (``file_kind``
reads the first bytes: safetensors, ONNX, JSON lines, PNG), unless the user forces it.
Nothing is written at the name of one of multinet's own lock or temporary files, forced
or not (it would defeat another run's lock), and a write through a symbolic link
replaces the link's target, as appending and locking follow the link. An input of
another kind is named by its kind (``not_of_kind``).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
import time
from pathlib import Path

from multinet.errors import MultinetError, argument

TEMPORARY_TAG = "multinet"
#: How the name of a lock file ends (``multinet.locks.lock_path``): ``.<name>.multinet.lock``.
LOCK_SUFFIX = f".{TEMPORARY_TAG}.lock"


class OutputError(MultinetError, OSError):
    """An output file or folder cannot be written (refused before or during the work).
    ``cause``: the operating system's few words on why (``No space left on device``),
    where known; the message itself names the file too."""

    def __init__(self, message: str, *, cause: str = ""):
        super().__init__(message)
        self.cause = cause


def named(flag: str, path) -> str:
    """An output as a message names it: ``--save a.st`` from the command line,
    ``save='a.st'`` from Python (whose ``flag``, ``multinet.errors.argument``, ends
    with ``=``)."""
    return f"{flag}{str(path)!r}" if flag.endswith("=") else f"{flag} {path}"


def reason(exc: OSError) -> str:
    """A few words on why an operating-system call failed: ``No space left on device``."""
    return getattr(exc, "cause", "") or exc.strerror or str(exc) or type(exc).__name__


def _host() -> str:
    return socket.gethostname().replace(os.sep, "_") or "localhost"


def temporary_path(path: Path, pid: int | None = None) -> Path:
    """The temporary file a write of ``path`` by process ``pid`` (this one) goes through."""
    return path.with_name(f".{path.name}.{TEMPORARY_TAG}.{_host()}."
                          f"{os.getpid() if pid is None else pid}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_temporaries(path: Path) -> list[Path]:
    """Temporary files of earlier writes to ``path`` by processes of this host that are
    gone (killed mid-write). Another host's files are left alone: its process ids mean
    nothing here."""
    prefix, suffix = f".{path.name}.{TEMPORARY_TAG}.", ".tmp"
    stale = []
    try:
        candidates = list(path.parent.glob(f".{_escape(path.name)}.{TEMPORARY_TAG}.*.tmp"))
    except OSError:
        return []
    for candidate in candidates:
        middle = candidate.name[len(prefix):-len(suffix)]
        host, _, pid = middle.rpartition(".")
        if host == _host() and pid.isdigit() and (int(pid) == os.getpid()
                                                  or not _alive(int(pid))):
            stale.append(candidate)
    return stale


def _escape(name: str) -> str:
    """``name`` with glob's special characters matched literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def write_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is always either its old contents or
    ``data``. Missing parent folders are created. A symbolic link is written through:
    its target is replaced (the temporary file beside it), as appending and the run's
    lock follow the link, where replacing the link itself would leave the target stale.
    Raises ``OSError`` (the previous file, if any, is untouched and no temporary file is
    left behind). Returns ``path`` as given."""
    given, path = Path(path), Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temporaries(path):
        stale.unlink(missing_ok=True)
    tmp = temporary_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return given


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_line(path, line: str) -> None:
    """Append one line with a single ``write`` to a file opened for appending, so a kill
    cannot leave half a record; a file whose last line was cut off (by a crash of an older
    writer) gets a line break first, so the new record stays a line of its own."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) not in (b"\n", None):
            data = b"\n" + data
        if os.write(fd, data) != len(data):
            # A nearly full disk takes part of the record without an error: take it back.
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    finally:
        os.close(fd)


def _last_byte(path, size: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            f.seek(size - 1)
            return f.read(1)
    except OSError:  # write-only for us: nothing to repair
        return None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_folder(folder: Path, flag: str, shown) -> None:
    """Create and remove a file in ``folder`` (the only test that also catches read-only
    mounts and permissions that root ignores)."""
    if not folder.is_dir():
        raise OutputError(f"{named(flag, shown)}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"{named(flag, shown)}: cannot write in {folder} ({reason(exc)})") from None


def special(path) -> str | None:
    """What an existing path is when it is not a regular file (through links), told from
    ``stat`` alone: a FIFO opened to be tested would wait for a reader forever.
    ``"a folder"``, ``"a named pipe (FIFO)"``, ``"a socket"``, ``"a device"``; None for a
    regular file or a missing path."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing, or a dangling link: the write creates a file
        return None
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def internal(path) -> str | None:
    """What ``path`` is when its name (or its real path's, through links) is one of
    multinet's own files: ``"a multinet lock file"`` (``.<name>.multinet.lock``) or
    ``"a multinet temporary file"`` (``temporary_path``); None otherwise."""
    for name in {Path(path).name, Path(os.path.realpath(path)).name}:
        if not name.startswith("."):
            continue
        if name.endswith(LOCK_SUFFIX):
            return "a multinet lock file"
        if f".{TEMPORARY_TAG}." in name and name.endswith(".tmp"):
            return "a multinet temporary file"
    return None


def check_not_internal(path, flag: str) -> None:
    """Refuse an output named as one of multinet's own lock or temporary files, whatever
    ``force`` says: writing there would defeat another run's lock on its outputs (or be
    removed as a stale write)."""
    kind = internal(path)
    if kind is not None:
        raise OutputError(f"{named(flag, path)}: is the name of {kind}, which multinet keeps for "
                          "itself; give another file name")


def check_output_file(path, flag: str, *, append: bool = False) -> Path:
    """Refuse, before any work, an output file that could not be written: a folder, a
    named pipe, a socket or a device (told without opening them), a path through
    something that is not a folder, a read-only place. Creates nothing. ``append``: the
    file is appended to (an existing file must take appending); otherwise it is
    replaced."""
    path = Path(path)
    check_not_internal(path, flag)
    kind = special(path)
    if kind == "a folder":
        raise OutputError(f"{named(flag, path)}: is a folder; give a file name")
    if kind is not None:
        raise OutputError(f"{named(flag, path)}: is {kind}, not a regular file; give a file name")
    if append and path.is_file():
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise OutputError(f"{named(flag, path)}: cannot write ({reason(exc)})") from None
    _probe_folder(_nearest_existing(path.parent), flag, path)
    return path


def same_file(a, b) -> bool:
    """Whether two paths name one file (through links and relative paths), existing or
    not yet."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def first_bytes(path, size: int = 64) -> bytes | None:
    """The first bytes of an existing, readable regular file; None otherwise."""
    try:
        if not Path(path).is_file():  # (opening a FIFO would wait for a writer)
            return None
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return None


#: The kinds of file multinet writes, as messages name them.
KINDS = {"checkpoint": "checkpoint (safetensors)", "onnx": "ONNX model",
         "metrics": "metrics file (JSON lines)", "png": "PNG picture"}
#: The figures ``multinet plot``, ``train --plots`` and ``Run.save_plots`` write into
#: their folder (``multinet.plots.write_all``).
FIGURES = ("training_curves.png", "predictions.png", "confusion_matrix.png")
#: The fields of ONNX's ``ModelProto`` that follow ``ir_version`` (field 1), as protobuf
#: writes them in field order: a model's third byte is one of these keys.
_ONNX_FIELDS = {2, 3, 4, 5, 6, 7, 8, 14, 20, 25}


def file_kind(head: bytes) -> str | None:
    """Which of ``KINDS`` a file is, told from its first bytes (``None``: none of them).

    A safetensors file starts with its JSON header's length (8 bytes, little-endian,
    under 100 MB) and the header's ``{``; a PNG with its signature; an ONNX model with
    the protobuf key of ``ir_version`` (``0x08``), a one-byte version and the next
    field's key; a metrics file is text whose first line starts with ``{``."""
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 10**8:
        return "checkpoint"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if (len(head) > 2 and head[0] == 0x08 and head[1] < 0x80 and head[2] & 0x7 in (0, 2)
            and head[2] >> 3 in _ONNX_FIELDS):
        return "onnx"
    if head.lstrip().startswith(b"{") and b"\0" not in head:
        return "metrics"
    return None


def _described(kind: str | None) -> str:
    if kind not in KINDS:
        return "a file multinet does not write"
    return f"{'an' if KINDS[kind][0] in 'AEIOU' else 'a'} {KINDS[kind]}"


def check_replaceable(path, flag: str, kind: str, *, force: bool = False) -> None:
    """Refuse to replace an existing file of another kind than ``kind`` (a key of
    ``KINDS``), unless ``force``: a metrics log, a script, a picture given by mistake
    would be lost. An empty file holds nothing to lose."""
    head = first_bytes(path)
    found = file_kind(head) if head else kind
    if found != kind and not force:
        raise OutputError(f"{named(flag, path)}: exists and is not {_described(kind)} but "
                          f"{_described(found)}; it would be replaced: give another file "
                          f"name, or {argument('force', True)} to replace it")


def check_appendable(path, flag: str) -> None:
    """Refuse to append JSON lines to an existing file that does not hold them (a
    checkpoint given as the metrics file would be damaged, whatever the user forces)."""
    head = first_bytes(path)
    if head and file_kind(head) != "metrics":
        raise OutputError(f"{named(flag, path)}: exists and is not {_described('metrics')} but "
                          f"{_described(file_kind(head))}; appending would damage it: "
                          "give another file name")


#: The command that writes each of ``KINDS``, as messages name it.
WRITERS = {"checkpoint": "multinet train --save", "onnx": "multinet export --onnx",
           "metrics": "multinet train --metrics", "png": "multinet plot"}


def is_onnx_model(path) -> bool:
    """Whether ``evaluate`` and ``predict`` read ``path`` as an ONNX model: by its first
    bytes where they tell (a checkpoint named .onnx stays one), else by its suffix."""
    kind = file_kind(first_bytes(path) or b"")
    return kind == "onnx" if kind in ("onnx", "checkpoint") else str(path).lower().endswith(".onnx")


def not_of_kind(path, wanted: str) -> str | None:
    """Why an input ``path`` read as ``wanted`` (a key of ``KINDS``) is not one, told
    from its ``stat`` (a special file is never opened: a FIFO would wait for a writer)
    and its first bytes (``file_kind``): ``"is a named pipe (FIFO), not a checkpoint
    (safetensors)"``, or what it is, which command writes it and what to give instead;
    None where it may be one (missing, or no kind multinet writes: its reader says)."""
    kind = internal(path) or special(path)
    if kind is not None:
        return f"is {kind}, not {_described(wanted)}"
    found = file_kind(first_bytes(path) or b"")
    if found is None or found == wanted:
        return None
    hint = ("give the checkpoint it was exported from"
            if (found, wanted) == ("onnx", "checkpoint")
            else f"give {_described(wanted)}, which {WRITERS[wanted]} writes")
    return (f"is {_described(found)}, which {WRITERS[found]} writes, not "
            f"{_described(wanted)}: {hint}")


def check_not_input(path, flag: str, inputs: dict) -> None:
    """Refuse an output that names one of the command's own inputs (``inputs``: what
    each is, as the message says it, to its path), whatever ``force`` says: the work
    would destroy what it reads."""
    for what, source in inputs.items():
        if source is not None and same_file(path, source):
            raise OutputError(f"{named(flag, path)}: is {what}; writing there would destroy "
                              "it: give another file name")


def check_output(path, flag: str, kind: str, *, inputs: dict | None = None,
                 force: bool = False) -> Path:
    """One file a command writes (replacing it), checked before any work:
    ``check_output_file``, then not one of ``inputs`` (``check_not_input``), then of
    ``kind`` if it exists (``check_replaceable``, which ``force`` overrides). Raises
    ``OutputError`` naming ``flag``."""
    if isinstance(path, str) and not path:  # it would be ignored, or be "."
        raise OutputError(f"{flag}: an empty path; name a file")
    path = check_output_file(path, flag)
    check_not_input(path, flag, inputs or {})
    check_replaceable(path, flag, kind, force=force)
    return path


def check_output_dir(path, flag: str, *, figures: tuple = (), inputs: dict | None = None,
                     force: bool = False) -> Path:
    """Refuse, before any work, an output folder that could not be written: a file, or a
    read-only place; and, for each of ``figures`` (file names in it), what
    ``check_output`` refuses of a PNG picture. Creates nothing."""
    if isinstance(path, str) and not path:  # it would be ".", which was not asked for
        raise OutputError(f"{flag}: an empty path; name a folder")
    path = Path(path)
    check_not_internal(path, flag)
    kind = special(path)
    if path.exists() and kind != "a folder":
        raise OutputError(f"{named(flag, path)}: is {kind or 'a file'}, not a folder")
    _probe_folder(_nearest_existing(path), flag, path)
    for name in figures:
        check_output(path / name, flag, "png", inputs=inputs, force=force)
    return path


def check_outputs(save=None, metrics=None, plots=None, *,
                  resumed_from: Path | None = None, force: bool = False) -> None:
    """A training run's outputs, checked before any work starts: a checkpoint file
    (``save``) that can be written and replaced, a metrics file (``metrics``) that can be
    appended to and is not the checkpoint's, a folder for the figures (``plots``).
    ``resumed_from``: the checkpoint the run continues, which ``save`` may name (its
    checkpoints then go where it resumed from), and no other output. ``force``: replace
    a file of another kind (never one of the run's inputs, never by appending). Raises
    ``OutputError`` naming the argument."""
    for name, value in (("save", save), ("metrics", metrics), ("plots", plots)):
        if isinstance(value, str) and not value:  # it would be ignored, or be "."
            raise OutputError(f"{argument(name)}: an empty path; name a "
                              f"{'folder' if name == 'plots' else 'file'}")
    resumed = {"the checkpoint the run resumes": resumed_from}
    if save is not None:
        in_place = resumed_from is not None and Path(save) == resumed_from
        try:
            check_output_file(save, argument("resume" if in_place else "save"))
        except OutputError as exc:
            if not in_place:
                raise
            raise OutputError(f"{exc}; the run's checkpoints go where it resumed from "
                              f"unless {argument('save', meta='PATH')} names another "
                              "place") from None
        check_replaceable(save, argument("save"), "checkpoint", force=force)
    if metrics is not None:
        check_output_file(metrics, argument("metrics"), append=True)
        if save is not None and same_file(save, metrics):
            raise OutputError(f"{argument('metrics')} {metrics}: is the checkpoint's file "
                              "too; give the metrics a file of their own")
        check_not_input(metrics, argument("metrics"), resumed)
        check_appendable(metrics, argument("metrics"))
    if plots is not None:
        check_output_dir(plots, argument("plots"), figures=FIGURES, inputs=resumed,
                         force=force)


def rescue_path(stem: str = "multinet-interrupted") -> Path:
    """A new file name in the system's temporary folder, for a state that could not be
    saved where it was meant to go."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"{stem}-{stamp}-{os.getpid()}.safetensors"
