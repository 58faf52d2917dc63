"""The errors multinet raises on purpose.

Every one of them is a user-facing condition (a wrong name, a missing package, a bad
file): the CLI prints its message as one line and exits with status 2. Anything else
escaping is a bug in multinet and is allowed to show its traceback.
"""


class MultinetError(Exception):
    """Base class: a condition the user can fix, described in one line."""


class UnknownBackend(MultinetError, LookupError):
    """No backend is registered under the requested name."""


class BackendUnavailable(MultinetError, RuntimeError):
    """The backend is registered but cannot run here (missing package, no device, ...)."""


class DatasetError(MultinetError, ValueError):
    """A dataset file is missing, unreadable or not what it claims to be."""
