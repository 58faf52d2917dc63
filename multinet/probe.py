"""``multinet backends --probe MODULE``: will multinet run on this library, and if not, why.

Runs, against any module, every call that the network, the optimizers and the training
loop make of an array namespace, each on a small input whose result NumPy knows, and
reports function by function what is missing, raises or comes out wrong (one line per
problem); then the parity levels (``multinet.parity``) of the module through the
generic backend, on a small synthetic problem, per dtype. ``tests/test_probe.py`` keeps
``CHECKS`` complete: it records every namespace function a training run calls and
requires a check for each.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from array_api_compat import array_namespace

from multinet import parity
from multinet.backends import generic
from multinet.errors import BackendUnavailable
from multinet.registry import DTYPES

A = np.array([[-1.5, 2.0, 0.25], [3.0, -0.5, 1.0]], np.float32)
W = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], np.float32)
B = np.array([0.5, -0.25, 1.0], np.float32)
LABELS = np.array([2, 0], np.int32)
PIXELS = np.array([[0, 128, 255], [1, 2, 3]], np.uint8)
T = np.array(2.0, np.float32)


@dataclass(frozen=True)
class Check:
    """One call: ``run(xp, put)`` on arrays made by ``put`` (a NumPy array onto ``xp``)
    must give ``expected`` (NumPy) in value, shape and, where given, ``dtype``."""

    call: str
    needs: tuple[str, ...]
    run: Callable[[Any, Callable], Any]
    expected: Any
    dtype: str | None = None


def _arange(xp, put):
    return xp.arange(3, dtype=xp.int32)


CHECKS = (
    Check("astype(uint8 images, float32) / 255.0", ("astype", "float32"),
          lambda xp, put: xp.astype(put(PIXELS), xp.float32) / 255.0,
          PIXELS.astype(np.float32) / 255.0, "float32"),
    Check("x @ W + b", (), lambda xp, put: put(A) @ put(W) + put(B[:2]), A @ W + B[:2]),
    Check("x.T @ delta", (), lambda xp, put: put(A).T @ put(A), A.T @ A),
    Check("where(z > 0, z, zero)", ("where", "zeros"),
          lambda xp, put: xp.where(put(A) > 0, put(A), xp.zeros((), dtype=put(A).dtype)),
          np.where(A > 0, A, 0.0)),
    Check("argmax(x, axis=1)", ("argmax",), lambda xp, put: xp.argmax(put(A), axis=1),
          np.argmax(A, axis=1)),
    Check("arange(3, dtype=int32)", ("arange", "int32"), _arange, np.arange(3), "int32"),
    Check("y[:, None] == columns[None, :]", ("arange", "int32"),
          lambda xp, put: put(LABELS)[:, None] == _arange(xp, put)[None, :],
          LABELS[:, None] == np.arange(3)[None, :]),
    Check("astype(bool, float32)", ("astype", "float32"),
          lambda xp, put: xp.astype(put(A) > 0, xp.float32), (A > 0).astype(np.float32),
          "float32"),
    Check("max(x, axis=1, keepdims=True)", ("max",),
          lambda xp, put: xp.max(put(A), axis=1, keepdims=True), A.max(axis=1, keepdims=True)),
    Check("exp(x)", ("exp",), lambda xp, put: xp.exp(put(A)), np.exp(A)),
    Check("log(x)", ("log",), lambda xp, put: xp.log(put(W * W + 1)), np.log(W * W + 1)),
    Check("sqrt(x)", ("sqrt",), lambda xp, put: xp.sqrt(put(W * W)), np.abs(W)),
    Check("sum(x, axis=1, keepdims=True)", ("sum",),
          lambda xp, put: xp.sum(put(A), axis=1, keepdims=True), A.sum(axis=1, keepdims=True)),
    Check("sum(x, axis=0)", ("sum",), lambda xp, put: xp.sum(put(A), axis=0), A.sum(axis=0)),
    Check("sum(x)", ("sum",), lambda xp, put: xp.sum(put(A)), A.sum()),
    Check("mean(x)", ("mean",), lambda xp, put: xp.mean(put(A)), A.mean()),
    Check("take(x, rows, axis=0)", ("take",),
          lambda xp, put: xp.take(put(A), put(np.array([1, 0], np.int32)), axis=0), A[[1, 0]]),
    Check("zeros_like(x)", ("zeros_like",), lambda xp, put: xp.zeros_like(put(A)),
          np.zeros_like(A), "float32"),
    Check("ones_like(x)", ("ones_like",), lambda xp, put: xp.ones_like(put(A)),
          np.ones_like(A), "float32"),
    Check("all(isfinite(x))", ("all", "isfinite"),
          lambda xp, put: xp.all(xp.isfinite(put(A))), np.array(True)),
    Check("scalar arithmetic: 1 - 0.9 ** t, -x, 2.0 * x - x / 4.0", (),
          lambda xp, put: ((1 - 0.9 ** put(T)) + (-put(A)) + 2.0 * put(A) - put(A) / 4.0),
          (1 - np.float32(0.9) ** T) + (-A) + 2.0 * A - A / 4.0),
    Check("indexing: x[:, 0], x[0:1, ...], x[(0, 0)], x[1, :]", (),
          lambda xp, put: (put(A)[:, 0], put(A)[0:1, ...], put(A)[(0, 0)], put(A)[1, :]),
          (A[:, 0], A[0:1, ...], A[0, 0], A[1, :])),
)

#: Namespace attributes used without a call of their own above.
ATTRIBUTES = ("asarray", "float32", "float64", "int32", "uint8")


@dataclass(frozen=True)
class Finding:
    """``kind`` is "missing", "raises", "wrong" or "namespace"; ``what`` the function or call."""

    kind: str
    what: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.kind:<9} {self.what}" + (f": {self.detail}" if self.detail else "")


def _host(array) -> np.ndarray:
    try:
        return np.from_dlpack(array)
    except (AttributeError, TypeError, BufferError, RuntimeError):
        return np.asarray(array)


def _short(array) -> str:
    text = np.array2string(np.asarray(array), precision=4, separator=", ")
    return " ".join(text.split())[:60]


def _compare(check: Check, xp, actual) -> str | None:
    """What is wrong with ``actual``, or None."""
    expected = check.expected if isinstance(check.expected, tuple) else (check.expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    for got, want in zip(actual, expected):
        want = np.asarray(want)
        if tuple(got.shape) != want.shape:
            return f"shape {tuple(got.shape)}, expected {want.shape}"
        if check.dtype is not None and got.dtype != getattr(xp, check.dtype):
            return f"dtype {got.dtype}, expected {check.dtype}"
        host = _host(got)
        if not np.allclose(host.astype(np.float64), want.astype(np.float64), rtol=1e-6,
                           atol=1e-6):
            return f"got {_short(host)}, expected {_short(want)}"
    return None


def check_namespace(xp) -> list[Finding]:
    """Every problem of ``xp`` for multinet: one ``Finding`` per missing function, per
    call that raises and per wrong result; empty when all of ``CHECKS`` pass."""
    needed = dict.fromkeys([*ATTRIBUTES, *(name for c in CHECKS for name in c.needs)])
    missing = [name for name in needed if not hasattr(xp, name)]
    findings = [Finding("missing", name) for name in missing]
    if "asarray" in missing:
        return findings  # nothing can be put on the library, so nothing else can run

    def put(array):
        return xp.asarray(array, dtype=getattr(xp, array.dtype.name))

    try:
        sample = put(A)
        own = array_namespace(sample)
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign library is a finding
        return findings + [Finding("raises", "asarray(float32 NumPy array)",
                                   f"{type(exc).__name__}: {exc}")]
    if own is not xp:
        findings.append(Finding("namespace", "array.__array_namespace__()",
                                f"arrays report {getattr(own, '__name__', own)!r}, so the "
                                "network would run on that namespace instead"))
    for check in CHECKS:
        if any(name in missing for name in check.needs):
            continue
        try:
            problem = _compare(check, xp, check.run(xp, put))
        except Exception as exc:  # noqa: BLE001
            findings.append(Finding("raises", check.call, f"{type(exc).__name__}: {exc}"))
            continue
        if problem:
            findings.append(Finding("wrong", check.call, problem))
    return findings


def parity_problem(samples: int = 256, steps: int = 25):
    """A small synthetic parity problem: the notebook's network on random pixels."""
    rng = np.random.default_rng(0)
    return parity.Problem(x=rng.integers(0, 256, (samples, 784), dtype=np.uint8),
                   y=rng.integers(0, 10, samples), sizes=(784, 10, 10), steps=steps,
                   checkpoints=(1, 10, steps))


def parity_rows(backend, dtypes=DTYPES, problem=None) -> list[dict]:
    """``multinet.parity`` levels of ``backend`` per dtype; any exception becomes a
    ``fail`` row with its one-line reason, a dtype the backend refuses a ``skipped`` row."""
    problem = problem or parity_problem()
    ref = parity.reference(problem)
    rows = []
    for dtype in dtypes:
        row = {"backend": backend.name, "dtype": dtype, "platform": backend.platform}
        try:
            levels = parity.compare(parity.run(backend, dtype, problem), ref, dtype, problem)
        except BackendUnavailable as exc:
            rows.append({**row, "verdict": "skipped", "reason": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - a foreign library's failure, in one line
            rows.append({**row, "verdict": "fail", "reason": f"{type(exc).__name__}: {exc}"})
            continue
        row["errors"] = {level: error for level, (error, _) in levels.items()}
        row["tolerances"] = {level: bound for level, (_, bound) in levels.items()}
        row["verdict"] = "pass" if parity.passed(levels) else "fail"
        rows.append(row)
    return rows


def probe(name: str) -> dict:
    """Everything ``multinet backends --probe NAME`` reports, as a dict: ``namespace``
    (its name), ``findings`` (one line each), ``parity`` (rows as ``parity_rows``)."""
    if not generic.importable(name):
        raise BackendUnavailable(f"--probe {name}: no module named {name!r}")
    findings, backend, xp = [], None, None
    try:
        _, xp = generic.namespace(name)
        backend = generic.load(name)
    except BackendUnavailable as exc:
        findings.append(Finding("namespace", name, str(exc)))
    if xp is None:
        try:
            xp = importlib.import_module(name)  # not a namespace: still say what it lacks
        except (Exception, SystemExit):  # noqa: BLE001 - already reported above
            xp = None
    findings += check_namespace(xp) if xp is not None else []
    if backend is None:
        rows = [{"backend": name, "dtype": d, "verdict": "skipped",
                 "reason": "not usable as a namespace (see above)"}
                for d in DTYPES]
    else:
        rows = parity_rows(backend)
    return {"module": name, "namespace": getattr(xp, "__name__", str(xp)),
            "findings": [f.line() for f in findings], "parity": rows,
            "ok": not findings and all(r["verdict"] != "fail" for r in rows)}


def worst_level(row: dict) -> str:
    """``"grads 1.2e-08 [3.8e-06]"``: the level closest to its tolerance, for one line."""
    ratios = {level: row["errors"][level] / bound if bound else
              (math.inf if row["errors"][level] else 0.0)
              for level, bound in row["tolerances"].items()}
    level = max(ratios, key=ratios.get)
    return f"{level} {row['errors'][level]:.1e} [{row['tolerances'][level]:.1e}]"
