"""A run owns its outputs while it runs: advisory locks on the files multinet writes.

Two runs writing one checkpoint (or appending to one metrics file, or drawing into one
figures folder) would leave one run's model under the other's records. Each output is
locked for as long as its writer works on it, and a second writer is refused at once
with one line naming the first (its process id, host, start time and command).

How. A lock is ``fcntl.flock`` on a small file beside the output,
``.<name>.multinet.lock`` (the output's real path, links resolved, so two spellings of
one file share it), which holds one JSON line naming its owner. The kernel releases a
``flock`` when its process ends however it ends (SIGKILL and power loss included), so a
lock never outlives its run. The file itself is removed when the run lets go of it;
after a SIGKILL it stays behind, unlocked: the next run to that output takes it over and
removes it, and nothing reads it as a lock while no process holds the ``flock``. It sits
beside the output rather than in a per-user folder so that runs of two users, or on two
hosts sharing a file system (NFS turns ``flock`` into a lock the server keeps), see each
other.

Why not the ``filelock`` package: its Unix lock truncates the lock file on every attempt
(a waiting process would erase the owner's name) and keeps the file forever (its
waiters share the inode); here nobody waits, so the file can go, and the standard
library's ``flock`` is all that is needed. On Windows (no ``fcntl``) outputs are not
locked, and on a file system without ``flock`` (some FUSE and cluster mounts) the run
goes on unlocked: a lock that cannot be taken there is not the run's fault.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import weakref
from pathlib import Path

from multinet.files import LOCK_SUFFIX, OutputError, named, reason

try:
    import fcntl
except ImportError:  # Windows: no flock, no locks (see the module's docstring)
    fcntl = None

#: ``flock`` errors that mean the file system cannot lock, not that another run holds it.
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}
#: The longest command a refusal quotes.
_COMMAND_CHARS = 120
#: The lock files this process holds, to the thread that holds each: a writer nested in
#: another's work on the same output (``Run.save_plots`` within ``fit``) shares its
#: lock, where another thread is refused as another process is.
_HELD: dict[Path, int] = {}


class OutputBusy(OutputError):
    """Another multinet run (or another ``fit`` of this process) is writing this output;
    ``owner`` is what its lock file says of it (``pid``, ``host``, ``started``,
    ``command``), empty where it says nothing."""

    def __init__(self, message: str, owner: dict):
        super().__init__(message)
        self.owner = owner


def lock_path(path) -> Path | None:
    """The lock file of an output (file or folder): beside its real path. None for the
    root folder, which has no folder beside it."""
    real = Path(os.path.realpath(path))
    return real.with_name(f".{real.name}{LOCK_SUFFIX}") if real.name else None


def _owner_record() -> bytes:
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program == "__main__.py":  # python -m multinet
        program = "multinet"
    command = " ".join([program, *sys.argv[1:]])
    if len(command) > _COMMAND_CHARS:
        command = command[:_COMMAND_CHARS - 3] + "..."
    return (json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                        "started": time.time(), "command": command}) + "\n").encode()


def _read_owner(fd: int) -> dict:
    """The owner a lock file names; the owner writes it just after locking, so an empty
    file is read again a few times before giving up."""
    for _ in range(10):
        try:
            text = os.pread(fd, 4096, 0)
            owner = json.loads(text)
            if isinstance(owner, dict):
                return owner
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    return {}


def _printable(text) -> str:
    """One line, whatever the record holds (a command with a line break in it)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def describe(owner: dict) -> str:
    """``pid 1234, started 15:02:11: multinet train --save a.st``: who holds a lock."""
    if not owner.get("pid"):
        return "which its lock file does not name"
    parts = [f"pid {_printable(owner['pid'])}"]
    if owner.get("host") and owner["host"] != socket.gethostname():
        parts[0] += f" on {_printable(owner['host'])}"
    elif owner["pid"] == os.getpid():
        parts[0] += " (this process)"
    if isinstance(owner.get("started"), (int, float)):
        started = time.localtime(owner["started"])
        today = time.localtime()[:3] == started[:3]
        parts.append("started " + time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M",
                                                started))
    text = ", ".join(parts)
    return text + (f": {_printable(owner['command'])}" if owner.get("command") else "")


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first (to
    remove again if the run writes nothing there)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    return missing


def _open(lock: Path) -> int:
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError:  # another user's lock file: locking needs no write access
        return os.open(lock, os.O_RDONLY | os.O_CLOEXEC)


def _same_file(fd: int, lock: Path) -> bool:
    try:
        mine, there = os.fstat(fd), os.stat(lock)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _lock_one(flag: str, path, lock: Path) -> tuple | None:
    """``(fd, lock, folders made, pid)`` once this process holds ``lock``; None where the file
    system cannot lock. Raises ``OutputBusy`` while another holds it."""
    try:
        made = _make_folders(lock.parent)
        while True:
            fd = _open(lock)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                _remove_folders(made)
                raise OutputBusy(f"{named(flag, path)} is being written by another multinet "
                                 f"run ({describe(owner)}); wait for it to end or choose "
                                 "another path", owner) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _UNSUPPORTED:
                    raise
                return None
            # The owner before us may have removed the file between our open and our
            # lock: then we hold a file nobody else will open, and must start again.
            if _same_file(fd, lock):
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _owner_record(), 0)
        except OSError:  # opened read-only, or a full disk: the lock holds all the same
            pass
        return fd, lock, made, os.getpid()
    except OutputBusy:
        raise
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot create its lock file {lock.name} "
                          f"({reason(exc)})") from None


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something was written there: it stays
            return


def _release(held: list) -> None:
    """Remove each lock file, then let go of its lock (in this order: a run that opens
    the file meanwhile finds it is no longer the one at that path, and starts again).
    A file is removed only while it is still the one locked: whatever was put at its
    path since (by hand, or by another program) is not this run's to remove."""
    while held:
        fd, lock, made, pid = held.pop()
        if pid != os.getpid():  # a forked child ending: the lock is its parent's
            continue
        _HELD.pop(lock, None)
        if _same_file(fd, lock):
            try:
                os.unlink(lock)
            except OSError:
                pass
        os.close(fd)
        _remove_folders(made)


class Held:
    """The locks on a run's outputs, from ``hold``; ``release()`` (or the end of a
    ``with`` block, or the end of the process) lets go of them and removes their files.

    Parameters
    ----------
    outputs : dict
        The argument that names each output (``--save``, ``save=``), to its path; None
        paths are skipped.
    """

    def __init__(self, outputs: dict):
        self.outputs = {flag: path for flag, path in outputs.items() if path is not None}
        self._held: list = []
        # A plan prepared and never run (its data failed to load) still lets go.
        self._finalizer = weakref.finalize(self, _release, self._held)

    def acquire(self) -> Held:
        """Lock every output, or none: ``OutputBusy`` naming the other run when one is
        taken, ``OutputError`` when a lock file cannot be created. A no-op while held."""
        if self._held or fcntl is None:
            return self
        try:
            for flag, path in self.outputs.items():
                lock = lock_path(path)
                if lock is None or _HELD.get(lock) == threading.get_ident():
                    continue  # (nested in this thread's own hold of it)
                if (taken := _lock_one(flag, path, lock)) is not None:
                    self._held.append(taken)
                    _HELD[lock] = threading.get_ident()
        except BaseException:
            _release(self._held)
            raise
        return self

    def release(self) -> None:
        """Let go of every lock and remove its file (and the folders made for it that
        stayed empty)."""
        _release(self._held)

    def __enter__(self) -> Held:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def hold(outputs: dict) -> Held:
    """Lock a run's outputs (``Held.acquire``); the caller releases them.

    Parameters
    ----------
    outputs : dict
        The argument naming each output, to its path (file or folder); None: none.

    Returns
    -------
    Held
        The locks, held.

    Raises
    ------
    OutputBusy
        Another multinet run is writing one of them; the message names it.
    multinet.files.OutputError
        A lock file cannot be created.
    """
    return Held(outputs).acquire()
