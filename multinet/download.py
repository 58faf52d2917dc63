"""Downloading a dataset into the cache, with pooch.

pooch (the fetcher SciPy and scikit-image use) does the careful part: it streams each
file to a temporary name in the target folder, checks its hash, and only then renames
it into place, so a partial or corrupt download is never where the reader looks. A
cached file whose hash is wrong is downloaded again. multinet adds the ordered list of
mirrors, the timeout and the one-line error when every mirror fails.

Mirrors, in order of precedence: ``--mirror URL`` (repeatable), ``$MULTINET_MIRRORS``
(separated by spaces or commas), the dataset's defaults.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from multinet.data import FILES, DatasetSpec, cache_dir, dataset_spec
from multinet.errors import DatasetError

MIRRORS_ENV_VAR = "MULTINET_MIRRORS"


def mirrors_for(spec: DatasetSpec, mirrors=None) -> list[str]:
    chosen = list(mirrors or []) or os.environ.get(MIRRORS_ENV_VAR, "").replace(",", " ").split()
    return [m if m.endswith("/") else m + "/" for m in (chosen or spec.mirrors)]


def _short_reason(exc: Exception) -> str:
    """A few words on why a transfer failed, for the one-line error."""
    import requests

    errors = requests.exceptions
    if isinstance(exc, errors.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, errors.Timeout):
        return "timed out"
    if isinstance(exc, errors.ChunkedEncodingError):
        return "connection broke off"
    if isinstance(exc, errors.ConnectionError):
        return "cannot connect"
    if isinstance(exc, ValueError) and "hash" in str(exc).lower():
        return "checksum mismatch"
    return (str(exc).splitlines() or [type(exc).__name__])[0][:80]


def fetch(name: str = "mnist", directory: str | os.PathLike | None = None, *, mirrors=None,
          timeout: float = 30.0, retries: int = 2, progress: bool = True) -> dict[str, Path]:
    """Download the dataset's four ``.gz`` files into ``directory`` (default: the cache,
    ``<cache>/<name>/``), skipping files already there with the right hash.

    Each file is tried on each mirror in turn; on one mirror, a failed or corrupt transfer
    is retried ``retries`` times with a growing pause (pooch's backoff: 1 s, 2 s, ...).
    """
    import pooch
    import requests

    spec = dataset_spec(name)
    target = Path(directory) if directory else cache_dir() / spec.name
    urls = mirrors_for(spec, mirrors)
    pooch.get_logger().setLevel(logging.WARNING)  # multinet says what it does itself
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    fetched = {}
    for role, stem in FILES.items():
        filename = f"{stem}.gz"
        known = target / filename
        if known.is_file() and pooch.hashes.hash_matches(str(known), spec.download_hashes[role]):
            fetched[role] = known
            continue
        failures = []
        for url in urls:
            store = pooch.create(path=target, base_url=url, retry_if_failed=retries,
                                 registry={filename: spec.download_hashes[role]})
            if progress:
                print(f"multinet: {filename} from {url}", file=sys.stderr)
            try:
                fetched[role] = Path(store.fetch(filename, downloader=downloader))
                break
            except (requests.exceptions.RequestException, ValueError, OSError) as exc:
                failures.append(f"{url} ({_short_reason(exc)})")
        else:
            raise DatasetError(
                f"could not download {filename} from any mirror: {'; '.join(failures)}. "
                f"Download the four {spec.name} .gz files by hand into {target}, or pass "
                f"--mirror URL"
            )
    return fetched


def ensure_dataset(name: str = "mnist", data_dir=None, *, offline: bool = False,
                   mirrors=None, progress: bool = True) -> None:
    """Make sure the dataset can be found, downloading it into the cache if it cannot and
    no folder was chosen explicitly (``--data-dir`` / ``$MULTINET_DATA``) and not offline."""
    from multinet.data import explicit_dir, locate

    try:
        locate(data_dir, name)
    except DatasetError:
        if offline or explicit_dir(data_dir) is not None:
            raise
        fetch(name, mirrors=mirrors, progress=progress)
