"""Check what an ``.npz`` archive declares before numpy allocates it.

``np.load`` trusts each member's ``.npy`` header: it allocates shape x itemsize bytes and only
then finds out whether the data is there, so a few-hundred-byte archive could claim terabytes
(``MemoryError``) or millions of empty rows. :func:`check_npz_claims` reads only the zip
directory and each member's header, and refuses an archive whose claims its bytes cannot back:

- a member's uncompressed size must be possible for its compressed size (stored: equal;
  deflate, what ``np.savez_compressed`` writes: at most deflate's ratio of 1032:1); other
  compression methods are refused, numpy never writes them;
- a member's header (shape, dtype) must fit in that member's uncompressed bytes, counting a
  zero-length axis as 1 so that shape (10**9, 0) is not free.
"""

from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
from numpy.lib import format as npy_format

from cider_mer.data.dataset import DatasetError

DEFLATE_MAX_RATIO = 1032  # deflate cannot expand a byte of input into more than ~1032 bytes of output
_ALLOWANCE = 1 << 20  # headers, zip overhead and small empty arrays


def _where(path: str, label: Optional[str], member: Optional[str] = None) -> str:
    parts = [x for x in (label, f"member '{member}'" if member is not None else None) if x]
    return f"{path} [{', '.join(parts)}]" if parts else path


def _read_header(member, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return npy_format.read_array_header_1_0(member)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(member)
    return npy_format._read_array_header(member, version)  # version 3.0: same layout, utf-8 header


def check_npz_claims(path: str | Path, label: Optional[str] = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Refuse an ``.npz`` whose directory or member headers claim more than it holds.

    ``label`` (e.g. ``"audio features"``) is added to messages as ``path [label, member 'x']``.
    Returns {member key: (shape, dtype)} from the headers; raises :class:`DatasetError`.
    Reads only the zip directory and the first bytes of each member.
    """
    p = str(path)
    file = Path(p)
    if not file.exists():
        raise DatasetError(f"{_where(p, label)}: no such file")
    if not file.is_file():
        raise DatasetError(f"{_where(p, label)}: not a file; expected an .npz archive")
    archive_size = file.stat().st_size
    claims: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                where = _where(p, label, key)
                _check_sizes(where, info, archive_size)
                if not info.filename.endswith(".npy"):
                    continue  # np.load never reads these as arrays
                with z.open(info) as member:
                    try:
                        version = npy_format.read_magic(member)
                        shape, _fortran, dtype = _read_header(member, version)
                    except (ValueError, TypeError, SyntaxError, EOFError, struct.error) as exc:
                        raise DatasetError(f"{where}: not a valid .npy array header ({exc})") from exc
                    available = info.file_size - member.tell()
                _check_claim(where, shape, dtype, available)
                claims[key] = (tuple(shape), dtype)
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, OverflowError, MemoryError,
            NotImplementedError, RuntimeError, struct.error) as exc:  # RuntimeError: an encrypted member
        raise DatasetError(f"{_where(p, label)}: expected an .npz archive (a zip of .npy arrays, as numpy.savez "
                           f"writes); cannot read it ({type(exc).__name__}: {exc})") from exc
    return claims


def _check_sizes(where: str, info: zipfile.ZipInfo, archive_size: int) -> None:
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DatasetError(f"{where}: compressed with zip method {info.compress_type}; expected stored or deflated "
                           "members (as numpy.savez and savez_compressed write)")
    if info.compress_size > archive_size:
        raise DatasetError(f"{where}: declares {info.compress_size:,} compressed bytes in a {archive_size:,}-byte file")
    limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else (
        DEFLATE_MAX_RATIO * info.compress_size + 1024)
    if info.file_size > limit:
        raise DatasetError(f"{where}: declares {info.file_size:,} bytes uncompressed from {info.compress_size:,} "
                           f"compressed bytes, more than that compression can produce (at most {limit:,}); "
                           "the file is corrupted or crafted")


def _check_claim(where: str, shape: tuple[int, ...], dtype: np.dtype, available: int) -> None:
    if dtype.hasobject:
        return  # an object array is a pickle: np.load(allow_pickle=False) refuses it without allocating
    nbytes = math.prod(shape) * dtype.itemsize
    virtual = math.prod(max(d, 1) for d in shape) * max(dtype.itemsize, 1)
    if nbytes > available or virtual > available + _ALLOWANCE:
        raise DatasetError(
            f"{where}: the header declares shape {tuple(shape)} of {dtype} ({nbytes:,} bytes"
            + (f", {virtual:,} counting empty axes as 1" if virtual != nbytes else "")
            + f") but the member holds {available:,} bytes; the file is corrupted or crafted"
        )
