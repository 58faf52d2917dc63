"""Array namespaces at the edges of the standard, built over array-api-strict.

Also a deliberately incomplete or wrong namespace (``missing``, ``replace``), for
``multinet backends --probe``, and one that records every function looked up
(``record``), to keep the probe complete.

The standard lets a library report an unknown dimension (``None``, as ndonnx does for a
symbolic batch; Dask reports ``nan`` after boolean masking) and lets it have no devices
to speak of. No installed library in CI does both plainly, so ``Shim`` wraps
array-api-strict's arrays and namespace and changes only that: ``shape[0]`` becomes
``unknown`` and, with ``devices=False``, arrays have no ``device`` attribute and creation
functions reject ``device=`` (as MLX does). Everything else, and every check that
array-api-strict makes, is array-api-strict's own.
"""

from __future__ import annotations

import operator

import array_api_strict as strict
import numpy as np

_OPERATORS = ("add", "sub", "mul", "truediv", "floordiv", "pow", "matmul", "mod",
              "and", "or", "xor")
_COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
_StrictArray = type(strict.asarray(0))


class Shim:
    """A namespace: array-api-strict's functions, over ``ShimArray``s."""

    def __init__(self, unknown=None, devices=True, missing=(), replace=None, record=None,
                 name="shim"):
        #: What ``shape[0]`` says: None (symbolic), nan (lazy), or "known" for the truth.
        self.unknown = unknown
        self.devices = devices
        #: Functions this namespace lacks, and ones it gets wrong (name -> function).
        self.missing = frozenset(missing)
        self.replace = dict(replace or {})
        #: A set that collects the name of every attribute looked up, or None.
        self.record = record
        self.__name__ = name
        self.__array_api_version__ = strict.__array_api_version__

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if self.record is not None:
            self.record.add(name)
        if name in self.missing:
            raise AttributeError(f"namespace {self.__name__!r} has no attribute {name!r}")
        value = self.replace.get(name) or getattr(strict, name)
        if not callable(value) or isinstance(value, type):
            return value  # dtypes, constants, classes

        def call(*args, **kwargs):
            if "device" in kwargs and not self.devices:
                raise TypeError(f"{name}() got an unexpected keyword argument 'device'")
            return self.wrap(value(*_unwrap(args), **_unwrap(kwargs)))

        return call

    def wrap(self, value):
        if isinstance(value, _StrictArray):
            return ShimArray(value, self)
        if isinstance(value, tuple):
            return tuple(self.wrap(v) for v in value)
        return value

    def asarray_from_numpy(self, array, dtype=None):
        """Test helper: a host array onto this namespace."""
        array = np.asarray(array, dtype=dtype)
        return self.wrap(strict.asarray(array, dtype=getattr(strict, array.dtype.name)))


def _unwrap(value):
    if isinstance(value, ShimArray):
        return value.inner
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


class ShimArray:
    def __init__(self, inner, namespace):
        self.inner = inner
        self.namespace = namespace

    def __array_namespace__(self, api_version=None):
        return self.namespace

    @property
    def shape(self):
        shape = self.inner.shape
        if not shape or self.namespace.unknown == "known":
            return shape
        return (self.namespace.unknown,) + shape[1:]

    @property
    def device(self):
        if not self.namespace.devices:
            raise AttributeError("'ShimArray' object has no attribute 'device'")
        return self.inner.device

    dtype = property(lambda self: self.inner.dtype)
    ndim = property(lambda self: self.inner.ndim)
    T = property(lambda self: self.namespace.wrap(self.inner.T))
    mT = property(lambda self: self.namespace.wrap(self.inner.mT))

    def __getitem__(self, key):
        return self.namespace.wrap(self.inner[_unwrap(key)])

    def __neg__(self):
        return self.namespace.wrap(-self.inner)

    def __float__(self):
        return float(self.inner)

    def __int__(self):
        return int(self.inner)

    def __bool__(self):
        return bool(self.inner)

    def __dlpack__(self, **kwargs):
        return self.inner.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.inner.__dlpack_device__()

    def to_numpy(self):
        return np.from_dlpack(self.inner)


def _binary(op, reflected=False):
    def method(self, other):
        a, b = (_unwrap(other), self.inner) if reflected else (self.inner, _unwrap(other))
        return self.namespace.wrap(op(a, b))
    return method


for _name in _OPERATORS:
    _op = getattr(operator, f"{_name}_" if _name in ("and", "or") else _name)
    setattr(ShimArray, f"__{_name}__", _binary(_op))
    setattr(ShimArray, f"__r{_name}__", _binary(_op, reflected=True))
for _name in _COMPARISONS:
    setattr(ShimArray, f"__{_name}__", _binary(getattr(operator, _name)))
ShimArray.__hash__ = None
