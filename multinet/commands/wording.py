"""How the ``multinet`` command words its errors: the Python API's arguments as its flags.

The library's messages name what to pass as the Python API spells it (``data_dir=FOLDER``,
through ``multinet.errors.argument``). The CLI runs every command under ``WORDING``, so
the same messages name its flags instead (``--data-dir FOLDER``): one message, two
spellings, and no command-line flag written into the library.
"""

from __future__ import annotations

from multinet.errors import NOT_GIVEN, Spelling

#: Arguments whose flag is not ``--`` + the name with dashes.
FLAGS = {"name": "--dataset", "source": "--data-source"}
#: Arguments spelled as a whole, whatever value or placeholder the message gives.
FIXED = {"mirrors": "--mirror URL"}
#: Arguments whose list is one value joined by commas (``--layers conv:6:5x5,relu``).
COMMA_LISTS = ("layers",)
#: Boolean arguments whose non-default value is a flag of its own.
SWITCHES = {("verify", False): "--no-verify", ("download", False): "--offline",
            ("progress", False): "--no-progress", ("compile", True): "--compile",
            ("force", True): "--force"}


def flag(name: str, value: object = NOT_GIVEN, meta: str | None = None) -> str:
    """``--data-dir FOLDER`` for ``("data_dir", meta="FOLDER")``, ``--dataset mnist``
    for ``("name", "mnist")``, ``--hidden 64 32`` for ``("hidden", (64, 32))``."""
    if name in FIXED:
        return FIXED[name]
    if isinstance(value, bool) and (name, value) in SWITCHES:
        return SWITCHES[(name, value)]
    text = FLAGS.get(name, "--" + name.replace("_", "-"))
    if meta is not None:
        return f"{text} {meta}"
    if value is NOT_GIVEN:
        return text
    joiner = "," if name in COMMA_LISTS else " "
    shown = joiner.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return f"{text} {shown}"


def _download(dataset: str) -> str:
    return f"run 'multinet data fetch --dataset {dataset}' to download it into the cache"


#: What ``multinet.errors.spelled`` is given for every command.
WORDING = Spelling(argument=flag, download=_download)
