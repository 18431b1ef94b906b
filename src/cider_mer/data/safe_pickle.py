"""Load downloaded pickle / joblib dataset files without running any code they carry.

``pickle.load`` on a file from the internet executes whatever callables the file names. Dataset
files only need containers, strings, numbers and numpy arrays, so the unpicklers here admit
exactly the globals that rebuild those and refuse every other one *before* it is called.

Plain pickles go through :class:`RestrictedUnpickler`. Files written by ``joblib.dump``
(uncompressed or compressed) go through a subclass of joblib's own unpickler with the same
allow-list; the pre-0.10 joblib format (arrays in companion files) is refused.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

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


class UnsafePickleError(ValueError):
    """The file asks to run code (or import a name) that a dataset file never needs."""


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


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle.Unpickler whose ``find_class`` admits only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: BinaryIO, path: str = "<stream>"):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _JOBLIB_GLOBALS:
            raise _JoblibDetected()
        _check_global(self._path, module, name, ALLOWED_GLOBALS)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._path}: refused to load: persistent ids are not allowed.")


def _joblib_load(path: str) -> Any:
    """Load a joblib.dump file through joblib's unpickler restricted to the same allow-list."""
    try:
        from joblib import numpy_pickle as jnp
        from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap
    except ImportError as exc:  # pragma: no cover - joblib ships with scikit-learn
        raise UnsafePickleError(f"{path}: this is a joblib file and joblib could not be imported ({exc}).")

    allowed = frozenset(ALLOWED_GLOBALS | _JOBLIB_GLOBALS)

    class _SafeNumpyUnpickler(jnp.NumpyUnpickler):
        dispatch = jnp.NumpyUnpickler.dispatch.copy()

        def find_class(self, module: str, name: str) -> Any:
            _check_global(path, module, name, allowed)
            return pickle._Unpickler.find_class(self, module, name)

        def persistent_load(self, pid: Any) -> Any:
            raise UnsafePickleError(f"{path}: refused to load: persistent ids are not allowed.")

        def load_build(self) -> None:
            # Object arrays are stored as a nested pickle stream: read it with our own restricted
            # unpickler whatever joblib version is installed, then continue as joblib does.
            pickle._Unpickler.load_build(self)
            top = self.stack[-1]
            if isinstance(top, jnp.NumpyArrayWrapper):
                self.stack.pop()
                if top.dtype.hasobject:
                    array = RestrictedUnpickler(self.file_handle, path).load()
                else:
                    array = top.read(self, self.ensure_native_byte_order)
                self.stack.append(array)
            elif isinstance(top, jnp.NDArrayWrapper):
                raise UnsafePickleError(
                    f"{path}: refused to load: joblib < 0.10 format with companion files is not supported."
                )

        dispatch[pickle.BUILD[0]] = load_build

    with open(path, "rb") as f:
        with _validate_fileobject_and_memmap(f, path, None) as (fobj, _):
            if isinstance(fobj, str):
                raise UnsafePickleError(f"{path}: refused to load: joblib < 0.10 format is not supported.")
            return _SafeNumpyUnpickler(path, fobj, ensure_native_byte_order=True).load()


def safe_load(path: str | os.PathLike) -> Any:
    """Load a pickle or joblib file, admitting only containers, str, numbers and numpy arrays.

    Raises :class:`UnsafePickleError` for anything else (nothing in the file is executed),
    ``FileNotFoundError`` when absent and ``ValueError`` for unreadable/truncated files.
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
            ValueError, OSError, MemoryError, AttributeError) as exc:
        raise ValueError(f"{path}: the file is truncated or corrupted ({type(exc).__name__}: {exc}).") from exc
