"""Load downloaded pickle / joblib dataset files without running any code they carry.

``pickle.load`` on a file from the internet executes whatever callables the file names. Dataset
files only need containers, strings, numbers and numpy arrays, so the unpicklers here admit
exactly the globals that rebuild those and refuse every other one *before* it is called.

Plain pickles go through :class:`RestrictedUnpickler`. Files written by ``joblib.dump``
(uncompressed or compressed) go through a subclass of joblib's own unpickler with the same
allow-list; the pre-0.10 joblib format (arrays in companion files) is refused.

Allocation bounds: a pickle can *declare* sizes (an array shape, ``bytes(n)``, a string length)
far larger than the data it holds, so a file of a few bytes could otherwise claim gigabytes.
Both unpicklers are the pure-Python ones with every call and every array state checked first:

- a length read from the stream (a string, bytes, frame or joblib array that must follow) has to
  fit in the bytes of the stream that remain;
- every allowed constructor is charged, before it runs, the memory its arguments claim (array
  shape x itemsize, ``bytes(n)``, the elements a ``list(...)`` copies, ...), and one load may
  charge at most ``8 x`` the stream's size plus 1 MiB (the stream is the file, or its decompressed
  content for a compressed joblib file). Real files charge about 1-2x their size;
- a numpy object-array state must hold exactly one item per element (numpy itself would crash).

A refused claim raises :class:`UnsafePickleError` naming the file; nothing large was allocated.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import codecs
import io
import lzma
import math
import operator
import os
import pickle
import struct
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from cider_mer.errors import CiderError

# (module, name) pairs that rebuild numpy arrays, dtypes and scalars, plus plain containers.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_BUILTIN_GLOBALS = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "complex"),
    ("builtins", "bool"),
    ("collections", "OrderedDict"),
    # Protocol-2 pickles store array bytes as latin-1 text and rebuild them with this pure function.
    ("_codecs", "encode"),
}
_JOBLIB_GLOBALS = {("joblib.numpy_pickle", "NumpyArrayWrapper")}

ALLOWED_GLOBALS = frozenset(_NUMPY_GLOBALS | _BUILTIN_GLOBALS)

_COMPRESSED_MAGIC = (
    b"\x78",  # zlib
    b"\x1f\x8b",  # gzip
    b"BZ",  # bz2
    b"\xfd7zXZ",  # xz
    b"\x5d\x00\x00",  # lzma
    b"\x04\x22\x4d\x18",  # lz4
    b"ZF",  # joblib's own zlib header
)

# One load may allocate (by the claims of its calls) this many times its stream's size, plus this.
ALLOCATION_FACTOR = 8
ALLOCATION_ALLOWANCE = 1 << 20


class UnsafePickleError(CiderError):
    """The file asks to run code (or import a name) that a dataset file never needs, or declares
    sizes far beyond what the file holds."""


class _JoblibDetected(Exception):
    """Internal signal: the pickle stream was written by joblib.dump."""


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Python-2 names in protocol 0-2 pickles (``__builtin__.set``) mapped to Python 3's."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _check_global(path: str, module: str, name: str, allowed: frozenset) -> None:
    module, name = _py3_name(module, name)
    if (module, name) not in allowed:
        raise UnsafePickleError(
            f"{path}: refused to load: the file asks for '{module}.{name}', but a dataset file may "
            "only contain dicts, lists, tuples, strings, numbers and numpy arrays. Nothing was "
            "executed. If you trust this file, convert it to plain containers and arrays first."
        )


# ----------------------------------------------------------------------------------------------
# allocation bounds


class _Budget:
    """The memory one load may claim: ``ALLOCATION_FACTOR`` x its stream's size + the allowance."""

    def __init__(self, path: str, stream_size: int):
        self.path = path
        self.stream_size = stream_size
        self.limit = ALLOCATION_FACTOR * stream_size + ALLOCATION_ALLOWANCE
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        if nbytes > self.limit - self.used:
            raise UnsafePickleError(
                f"{self.path}: refused to load: {what} would take {nbytes:,} bytes, more than the file can "
                f"hold (its pickle data is {self.stream_size:,} bytes; a load may allocate at most "
                f"{self.limit:,} in all, {self.used:,} already used). The file is corrupted or crafted; "
                "nothing that large was allocated."
            )
        self.used += nbytes


class _BoundedReader:
    """A stream of known length that refuses any read asking for more bytes than remain."""

    def __init__(self, raw: BinaryIO, size: int):
        self._raw = raw
        self.size = size
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.remaining
        elif n > self.remaining:
            raise pickle.UnpicklingError(
                f"{n:,} bytes are declared at byte {self.pos:,} but only {self.remaining:,} remain"
            )
        data = self._raw.read(n)
        self.pos += len(data)
        return data

    def readline(self) -> bytes:
        line = self._raw.readline()
        self.pos += len(line)
        return line


def _stream_size(f: BinaryIO) -> int:
    """Bytes from the current position of a seekable binary file to its end."""
    try:
        return max(0, os.fstat(f.fileno()).st_size - f.tell())
    except (AttributeError, OSError, io.UnsupportedOperation):
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return max(0, end - pos)


def _index(value: Any, what: str) -> int:
    if isinstance(value, bool):
        value = int(value)
    try:
        out = operator.index(value)
    except TypeError:
        raise pickle.UnpicklingError(f"{what}: expected an integer, got {type(value).__name__}") from None
    if out < 0:
        raise pickle.UnpicklingError(f"{what}: expected a non-negative integer, got {out}")
    return out


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(_index(d, "array shape") for d in value)
    return (_index(value, "array shape"),)


def _dtype(value: Any) -> np.dtype:
    if isinstance(value, np.dtype):
        return value
    if value is None or isinstance(value, (str, bytes)):
        return np.dtype(value)
    raise pickle.UnpicklingError(f"array dtype: expected a numpy dtype or its name, got {type(value).__name__}")


def _array_claim(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes an array of ``shape`` claims; a zero-length axis counts as 1 so that (10**9, 0) still
    counts its 10**9 rows (iterating it would create that many views)."""
    return math.prod(max(d, 1) for d in shape) * max(int(dtype.itemsize), 1)


def _describe(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"a numpy array of shape {shape} and dtype {dtype}"


def _length(value: Any, what: str) -> int:
    if isinstance(value, (np.ndarray, memoryview)):
        return int(value.nbytes) if value.ndim == 0 else int(value.shape[0])
    try:
        return len(value)
    except TypeError:
        raise pickle.UnpicklingError(f"{what}: expected a sized container, got {type(value).__name__}") from None


def _per_item(value: Any) -> int:
    """Extra bytes each item costs when iterated (new objects for arrays, memoryviews and text)."""
    return 128 if isinstance(value, (np.ndarray, memoryview, str)) else 0


# Each guard receives a call's (args, kwargs) and returns (bytes claimed, what is being built); the
# call runs only after the claim is charged. Allowed callables without a guard are refused.


def _guard_reconstruct(args: tuple, kwargs: dict) -> tuple[int, str]:
    if kwargs or len(args) != 3 or args[0] is not np.ndarray:
        raise pickle.UnpicklingError("numpy _reconstruct: expected (numpy.ndarray, shape, dtype)")
    shape, dtype = _shape(args[1]), _dtype(args[2])
    return _array_claim(shape, dtype), _describe(shape, dtype)


def _guard_ndarray(args: tuple, kwargs: dict) -> tuple[int, str]:
    names = ("shape", "dtype", "buffer", "offset", "strides", "order")
    if len(args) > len(names) or not set(kwargs) <= set(names[len(args):]):
        raise pickle.UnpicklingError("numpy.ndarray: unexpected arguments")
    bound = dict(zip(names, args), **kwargs)
    if "shape" not in bound:
        raise pickle.UnpicklingError("numpy.ndarray: no shape given")
    shape = _shape(bound["shape"])
    dtype = _dtype(bound.get("dtype")) if bound.get("dtype") is not None else np.dtype(float)
    return _array_claim(shape, dtype), _describe(shape, dtype)


def _guard_frombuffer(args: tuple, kwargs: dict) -> tuple[int, str]:
    if kwargs or len(args) not in (4, 5):
        raise pickle.UnpicklingError("numpy _frombuffer: expected (buffer, dtype, shape, order[, axis_order])")
    shape, dtype = _shape(args[2]), _dtype(args[1])
    return _array_claim(shape, dtype), _describe(shape, dtype)


def _guard_scalar(args: tuple, kwargs: dict) -> tuple[int, str]:
    if kwargs or len(args) not in (1, 2):
        raise pickle.UnpicklingError("numpy scalar: expected (dtype[, data])")
    dtype = _dtype(args[0])
    return max(int(dtype.itemsize), 1), f"a numpy scalar of dtype {dtype}"


def _guard_encode(args: tuple, kwargs: dict) -> tuple[int, str]:
    if kwargs or len(args) not in (1, 2, 3) or not isinstance(args[0], str):
        raise pickle.UnpicklingError("_codecs.encode: expected (str[, encoding[, errors]])")
    encoding = args[1] if len(args) > 1 else "utf-8"
    try:
        codec = codecs.lookup(encoding).name if isinstance(encoding, str) else None
    except LookupError:
        codec = None
    if codec not in ("iso8859-1", "ascii", "utf-8"):
        raise pickle.UnpicklingError(f"_codecs.encode: only latin-1, ascii or utf-8 are expected, got {encoding!r}")
    per_char = 4 if codec == "utf-8" else 1
    return per_char * len(args[0]), f"a {len(args[0]):,}-character string encoded to bytes"


def _guard_bytes(args: tuple, kwargs: dict) -> tuple[int, str]:
    if len(args) + len(kwargs) > 3:
        raise pickle.UnpicklingError("bytes/bytearray: unexpected arguments")
    source = args[0] if args else kwargs.get("source", b"")
    if isinstance(source, str):
        return 4 * len(source), f"bytes from a {len(source):,}-character string"
    if isinstance(source, (np.ndarray, memoryview)):
        return int(source.nbytes), f"bytes copied from a {int(source.nbytes):,}-byte buffer"
    if isinstance(source, (int, np.integer)):
        n = _index(source, "bytes length")
        return n, "a bytes object"
    if isinstance(source, np.generic):
        return int(source.nbytes), "bytes copied from a numpy scalar"
    return _length(source, "bytes source"), "a bytes object"


def _guard_str(args: tuple, kwargs: dict) -> tuple[int, str]:
    if len(args) + len(kwargs) > 3:
        raise pickle.UnpicklingError("str: unexpected arguments")
    value = args[0] if args else kwargs.get("object", "")
    if isinstance(value, (str, bytes, bytearray)):
        return 4 * len(value) + 64, f"a string from {len(value):,} characters or bytes"
    if isinstance(value, np.generic):
        return 4 * int(value.nbytes) + 64, "a string from a numpy scalar"
    if value is None or isinstance(value, (int, float, complex)):
        return 64, "a string"
    raise pickle.UnpicklingError(f"str: expected text, bytes or a number, got {type(value).__name__}")


def _guard_number(args: tuple, kwargs: dict) -> tuple[int, str]:
    if len(args) + len(kwargs) > 2:
        raise pickle.UnpicklingError("number: unexpected arguments")
    total = sum(len(v) for v in (*args, *kwargs.values()) if isinstance(v, (str, bytes, bytearray)))
    return total + 64, "a number"


def _container_guard(per_slot: int) -> Callable[[tuple, dict], tuple[int, str]]:
    def guard(args: tuple, kwargs: dict) -> tuple[int, str]:
        if len(args) > 1 or (kwargs and per_slot < 48):
            raise pickle.UnpicklingError("container: unexpected arguments")
        if not args:
            return 64 + per_slot * len(kwargs), "an empty container"
        n = _length(args[0], "container source")
        return 64 + n * (per_slot + _per_item(args[0])), f"a container of {n:,} items"
    return guard


def _guards() -> dict[Any, Callable[[tuple, dict], tuple[int, str]]]:
    try:
        from numpy._core.multiarray import _reconstruct, scalar
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
        from numpy.core.numeric import _frombuffer

    sequence, hashed, mapping = _container_guard(8), _container_guard(32), _container_guard(64)
    return {
        _reconstruct: _guard_reconstruct,
        np.ndarray: _guard_ndarray,
        _frombuffer: _guard_frombuffer,
        scalar: _guard_scalar,
        np.dtype: lambda args, kwargs: (256, "a numpy dtype"),
        _codecs.encode: _guard_encode,
        bytes: _guard_bytes,
        bytearray: _guard_bytes,
        str: _guard_str,
        int: _guard_number,
        float: _guard_number,
        complex: _guard_number,
        bool: _guard_number,
        list: sequence,
        tuple: sequence,
        set: hashed,
        frozenset: hashed,
        dict: mapping,
        OrderedDict: mapping,
    }


_GUARDS: dict[Any, Callable[[tuple, dict], tuple[int, str]]] = {}


def _guard_for(func: Any) -> Callable[[tuple, dict], tuple[int, str]] | None:
    if not _GUARDS:
        _GUARDS.update(_guards())
    try:
        return _GUARDS.get(func)
    except TypeError:  # unhashable: certainly not an allowed callable
        return None


def _check_array_state(state: Any) -> tuple[int, str]:
    """Validate a numpy ``ndarray.__setstate__`` state; returns (bytes claimed, description)."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise pickle.UnpicklingError("numpy array state: expected (version, shape, dtype, fortran, data)")
    shape, dtype, _fortran, data = state[-4:]
    shape = _shape(shape)
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError("numpy array state: expected a numpy dtype")
    size = math.prod(shape)
    if dtype.hasobject:
        # numpy reads ``size`` items from the list without checking its length (a short list crashes it).
        if not isinstance(data, list) or len(data) != size:
            got = f"{len(data):,} items" if isinstance(data, list) else type(data).__name__
            raise pickle.UnpicklingError(f"numpy object array state: expected a list of {size:,} items, got {got}")
    else:
        if not isinstance(data, (bytes, bytearray, str)):
            raise pickle.UnpicklingError(f"numpy array state: expected the array bytes, got {type(data).__name__}")
        if len(data) != size * dtype.itemsize:
            raise pickle.UnpicklingError(
                f"numpy array state: shape {shape} of {dtype} needs {size * dtype.itemsize:,} bytes, "
                f"the file has {len(data):,}"
            )
    return _array_claim(shape, dtype), _describe(shape, dtype)


class _Guarded:
    """Checks shared by both unpicklers (mixed into ``pickle._Unpickler`` subclasses).

    Every call the stream makes (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST) goes through :meth:`_call`,
    every numpy array state (BUILD) through :func:`_check_array_state`, and BYTEARRAY8 must fit
    in the bytes that remain.
    """

    _path: str
    _budget: _Budget
    _stream: _BoundedReader

    def _call(self, func: Any, args: Any, kwargs: Any = None, new: bool = False) -> Any:
        if type(args) is not tuple or (kwargs is not None and type(kwargs) is not dict):
            raise pickle.UnpicklingError("malformed call: arguments are not a tuple")
        kwargs = kwargs or {}
        guard = _guard_for(func)
        if guard is None:
            if any(func is cls for cls in _PASS_THROUGH):
                return func.__new__(func, *args, **kwargs) if new else func(*args, **kwargs)
            raise pickle.UnpicklingError(f"malformed call: a {type(func).__name__} object is called")
        claim, what = guard(args, kwargs)
        self._budget.charge(claim, what)
        return func.__new__(func, *args, **kwargs) if new else func(*args, **kwargs)

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._call(stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, new=True))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, kwargs, new=True))

    def _instantiate(self, klass: Any, args: list) -> None:
        self.append(self._call(klass, tuple(args), new=not args and isinstance(klass, type)))

    def load_build(self) -> None:
        if len(self.stack) >= 2 and isinstance(self.stack[-2], np.ndarray):
            claim, what = _check_array_state(self.stack[-1])
            self._budget.charge(claim, what)
        pickle._Unpickler.load_build(self)

    def load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._stream.remaining + self._unframer_left():
            raise pickle.UnpicklingError(
                f"a {n:,}-byte bytearray is declared but only {self._stream.remaining:,} bytes remain"
            )
        buf = bytearray(n)
        self.readinto(buf)
        self.append(buf)

    def _unframer_left(self) -> int:
        frame = getattr(getattr(self, "_unframer", None), "current_frame", None)
        return len(frame.getbuffer()) - frame.tell() if frame is not None else 0


_PASS_THROUGH: set = set()  # filled with joblib's NumpyArrayWrapper when joblib is used


def _guarded_dispatch(base: dict) -> dict:
    dispatch = dict(base)
    dispatch[pickle.REDUCE[0]] = _Guarded.load_reduce
    dispatch[pickle.NEWOBJ[0]] = _Guarded.load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _Guarded.load_newobj_ex
    dispatch[pickle.BUILD[0]] = _Guarded.load_build
    dispatch[pickle.BYTEARRAY8[0]] = _Guarded.load_bytearray8
    return dispatch


class RestrictedUnpickler(_Guarded, pickle._Unpickler):
    """An unpickler whose ``find_class`` admits only :data:`ALLOWED_GLOBALS` and whose calls are
    bounded by the stream's size (see the module notes)."""

    dispatch = _guarded_dispatch(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, path: str = "<stream>", budget: _Budget | None = None):
        stream = file if isinstance(file, _BoundedReader) else _BoundedReader(file, _stream_size(file))
        super().__init__(stream)
        self._path = path
        self._stream = stream
        # A shared budget means a stream nested in a joblib file: joblib's names are then refused.
        self._nested = budget is not None
        self._budget = budget if budget is not None else _Budget(path, stream.size)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _JOBLIB_GLOBALS and not self._nested:
            raise _JoblibDetected()
        _check_global(self._path, module, name, ALLOWED_GLOBALS)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._path}: refused to load: persistent ids are not allowed.")


def _check_joblib_wrapper(wrapper: Any, path: str, stream: _BoundedReader, budget: _Budget) -> None:
    """Refuse a joblib array whose declared shape x itemsize the rest of the stream cannot hold."""
    shape = _shape(getattr(wrapper, "shape", None))
    dtype = getattr(wrapper, "dtype", None)
    if not isinstance(dtype, np.dtype) or getattr(wrapper, "order", None) not in ("C", "F"):
        raise pickle.UnpicklingError("joblib array header: expected a numpy dtype and order 'C' or 'F'")
    what = _describe(shape, dtype)
    if not dtype.hasobject:
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > stream.remaining:
            raise UnsafePickleError(
                f"{path}: refused to load: {what} is declared ({nbytes:,} bytes), but only "
                f"{stream.remaining:,} bytes of the file's data remain. The file is corrupted or crafted; "
                "nothing that large was allocated."
            )
    budget.charge(_array_claim(shape, dtype), what)


def _joblib_load(path: str) -> Any:
    """Load a joblib.dump file through joblib's unpickler restricted to the same allow-list."""
    try:
        from joblib import numpy_pickle as jnp
        from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap
    except ImportError as exc:  # pragma: no cover - joblib ships with scikit-learn
        raise UnsafePickleError(f"{path}: this is a joblib file and joblib could not be imported ({exc}).")

    allowed = frozenset(ALLOWED_GLOBALS | _JOBLIB_GLOBALS)
    _PASS_THROUGH.add(jnp.NumpyArrayWrapper)

    class _SafeNumpyUnpickler(_Guarded, jnp.NumpyUnpickler):
        dispatch = _guarded_dispatch(jnp.NumpyUnpickler.dispatch)

        def find_class(self, module: str, name: str) -> Any:
            _check_global(path, module, name, allowed)
            return pickle._Unpickler.find_class(self, module, name)

        def persistent_load(self, pid: Any) -> Any:
            raise UnsafePickleError(f"{path}: refused to load: persistent ids are not allowed.")

        def load_build(self) -> None:
            # Object arrays are stored as a nested pickle stream: read it with our own restricted
            # unpickler whatever joblib version is installed, then continue as joblib does.
            _Guarded.load_build(self)
            top = self.stack[-1]
            if isinstance(top, jnp.NumpyArrayWrapper):
                self.stack.pop()
                _check_joblib_wrapper(top, path, self._stream, self._budget)
                if top.dtype.hasobject:
                    array = RestrictedUnpickler(self.file_handle, path, self._budget).load()
                else:
                    array = top.read(self, self.ensure_native_byte_order)
                self.stack.append(array)
            elif isinstance(top, jnp.NDArrayWrapper):
                raise UnsafePickleError(
                    f"{path}: refused to load: joblib < 0.10 format with companion files is not supported."
                )

        dispatch[pickle.BUILD[0]] = load_build

    def open_stream(f: BinaryIO):
        return _validate_fileobject_and_memmap(f, path, None)

    with open(path, "rb") as f:
        with open_stream(f) as (fobj, _):
            if isinstance(fobj, str):
                raise UnsafePickleError(f"{path}: refused to load: joblib < 0.10 format is not supported.")
            if fobj is f:
                size = _stream_size(f)
            else:  # compressed: the budget is the decompressed size, counted in chunks first
                size = 0
                with open(path, "rb") as g, open_stream(g) as (counter, _):
                    while chunk := counter.read(1 << 20):
                        size += len(chunk)
            stream = _BoundedReader(fobj, size)
            unpickler = _SafeNumpyUnpickler(path, stream, ensure_native_byte_order=True)
            unpickler._path, unpickler._stream, unpickler._budget = path, stream, _Budget(path, size)
            return unpickler.load()


def safe_load(path: str | os.PathLike) -> Any:
    """Load a pickle or joblib file, admitting only containers, str, numbers and numpy arrays.

    Raises :class:`UnsafePickleError` for anything else (nothing in the file is executed) and for
    sizes the file cannot hold, ``FileNotFoundError`` when absent and ``ValueError`` for
    unreadable/truncated files.
    """
    p = str(Path(path))
    with open(p, "rb") as f:
        head = f.read(8)
        if not head:
            raise ValueError(f"{p}: the file is empty; expected a pickle dict with train/valid/test splits.")
        if head[:1] != b"\x80":
            if any(head.startswith(m) for m in _COMPRESSED_MAGIC):
                return _load_wrapped(p, _joblib_load, p)
            raise ValueError(f"{p}: not a pickle or joblib file (first bytes {head[:4]!r}).")
        f.seek(0)
        try:
            return _load_wrapped(p, RestrictedUnpickler(f, p).load)
        except _JoblibDetected:
            pass
    return _load_wrapped(p, _joblib_load, p)


def _load_wrapped(path: str, fn, *args) -> Any:
    """Run a loader and turn low-level unpickling failures into one clear message."""
    try:
        return fn(*args)
    except (UnsafePickleError, _JoblibDetected):
        raise
    except (EOFError, pickle.UnpicklingError, io.UnsupportedOperation, IndexError, KeyError, TypeError,
            ValueError, OSError, MemoryError, AttributeError, OverflowError, struct.error, zlib.error,
            lzma.LZMAError) as exc:
        raise ValueError(f"{path}: the file is truncated or corrupted ({type(exc).__name__}: {exc}).") from exc
