"""Tiny files must not claim huge allocations (issue 19, item 6).

Each crafted file below is a few bytes to a few KiB and declares tens of MiB or more (small enough
that the unbounded loader merely wastes memory rather than taking the machine down). The loader
must refuse each with an error naming the file before allocating, while real files of every
pickle protocol, and joblib files, still load.
"""

import io
import pickle
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from collections import OrderedDict

import joblib
import numpy as np
import pytest

from cider_mer.data.dataset import DatasetError, load_dataset, save_dataset
from cider_mer.data.npz_safety import check_npz_claims
from cider_mer.data.safe_pickle import UnsafePickleError, safe_load

from conftest import make_dataset_dict

MIB = 1 << 20


# ----------------------------------------------------------------------------------------------
# hand-assembled pickle streams


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(n: int) -> bytes:
    data = pickle.encode_long(n)
    return pickle.LONG1 + bytes([len(data)]) + data


def _text(s: str) -> bytes:
    data = s.encode("utf-8")
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


def _stream(body: bytes, proto: int = 2) -> bytes:
    return pickle.PROTO + bytes([proto]) + body + pickle.STOP


_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"  # where numpy pickles its hooks
_NDARRAY = _global("numpy", "ndarray")
_RECONSTRUCT = _global(f"{_CORE}.multiarray", "_reconstruct")
_DTYPE_O = _global("numpy", "dtype") + _text("O8") + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


CLAIMS = {
    # bytes(64 MiB) / bytearray(64 MiB) from a ~30-byte file
    "bytes": _stream(_global("builtins", "bytes") + _int(64 * MIB) + pickle.TUPLE1 + pickle.REDUCE),
    "bytearray": _stream(_global("builtins", "bytearray") + _int(64 * MIB) + pickle.TUPLE1 + pickle.REDUCE),
    # numpy's own reconstruction hook asked for an 8M-element object array (64 MiB of pointers, all set to None)
    "reconstruct": _stream(_RECONSTRUCT + _NDARRAY + _int(8 * MIB) + pickle.TUPLE1 + _text("O") + pickle.TUPLE3
                           + pickle.REDUCE),
    # numpy.ndarray called directly
    "ndarray": _stream(_NDARRAY + _int(8 * MIB) + pickle.TUPLE1 + _DTYPE_O + pickle.TUPLE2 + pickle.REDUCE),
    # an array of shape (1M, 0) (no data at all) turned into a list: one new view object per row
    "zero_width_rows": _stream(
        _global("builtins", "list") + _global(f"{_CORE}.numeric", "_frombuffer") + pickle.MARK
        + pickle.SHORT_BINBYTES + b"\x00" + _global("numpy", "dtype") + _text("f8") + pickle.NEWFALSE + pickle.NEWTRUE
        + pickle.TUPLE3 + pickle.REDUCE + _int(MIB) + _int(0) + pickle.TUPLE2 + _text("C") + pickle.TUPLE
        + pickle.REDUCE        + pickle.TUPLE1 + pickle.REDUCE, proto=3,
    ),
}


def _quadratic_stream(copies: int = 400, width: int = 4000) -> bytes:
    """One 4000-byte string copied into 400 lists of 4000 items: 12.8 MB of pointers from ~6 KB."""
    body = _global("_codecs", "encode") + _text("a" * width) + _text("latin1") + pickle.TUPLE2 + pickle.REDUCE
    body += pickle.BINPUT + b"\x01" + pickle.POP
    body += _global("builtins", "list") + pickle.BINPUT + b"\x02" + pickle.POP
    body += pickle.EMPTY_LIST + pickle.MARK
    body += (pickle.BINGET + b"\x02" + pickle.BINGET + b"\x01" + pickle.TUPLE1 + pickle.REDUCE) * copies
    body += pickle.APPENDS
    return _stream(body)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_declared_sizes_beyond_the_file_are_refused(tmp_path, name):
    path = _write(tmp_path, f"{name}.pkl", CLAIMS[name])
    assert path.stat().st_size < 200
    tracemalloc.start()
    try:
        with pytest.raises(UnsafePickleError, match=rf"{name}\.pkl: refused to load: .* more than the file can hold"):
            safe_load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB, f"{peak:,} bytes allocated before refusing"
    with pytest.raises(DatasetError, match=rf"{name}\.pkl: refused to load"):
        load_dataset(path)


def test_repeated_copies_count_against_one_budget(tmp_path):
    path = _write(tmp_path, "copies.pkl", _quadratic_stream())
    with pytest.raises(UnsafePickleError, match=r"copies\.pkl: refused to load: a container of 4,000 items"):
        safe_load(path)


def test_a_few_copies_are_fine(tmp_path):
    path = _write(tmp_path, "few.pkl", _quadratic_stream(copies=3))
    assert [len(x) for x in safe_load(path)] == [4000, 4000, 4000]


@pytest.mark.parametrize("opcode", [pickle.BINBYTES8, pickle.BINUNICODE8, pickle.BYTEARRAY8, pickle.FRAME],
                         ids=["BINBYTES8", "BINUNICODE8", "BYTEARRAY8", "FRAME"])
def test_lengths_beyond_the_end_of_the_file_are_refused(tmp_path, opcode):
    path = _write(tmp_path, "long.pkl", pickle.PROTO + b"\x05" + opcode + (1 << 40).to_bytes(8, "little") + b"abcd.")
    with pytest.raises(ValueError, match=r"long\.pkl: the file is truncated or corrupted .*1,099,511,627,776.*"
                                         r"declared.* only 5 (bytes )?remain"):
        safe_load(path)


def test_short_object_array_state_is_an_error_not_a_crash(tmp_path):
    """numpy reads as many items as the shape says from the state's list: a short list crashed the process."""
    state = (pickle.MARK + _int(1) + _int(50) + pickle.TUPLE1 + _DTYPE_O + pickle.NEWFALSE
             + pickle.EMPTY_LIST + pickle.MARK + _int(1) + _int(2) + pickle.APPENDS + pickle.TUPLE)
    data = _stream(_RECONSTRUCT + _NDARRAY + _int(0) + pickle.TUPLE1 + _text("b") + pickle.TUPLE3 + pickle.REDUCE
                   + state + pickle.BUILD)
    path = _write(tmp_path, "short.pkl", data)
    code = ("import sys; from cider_mer.data.safe_pickle import safe_load\n"
            "try:\n    safe_load(sys.argv[1])\nexcept ValueError as e:\n    print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])
    assert "short.pkl: the file is truncated or corrupted" in proc.stdout
    assert "expected a list of 50 items, got 2 items" in proc.stdout


def test_joblib_array_larger_than_the_file_is_refused(tmp_path):
    from joblib.numpy_pickle import NumpyArrayWrapper

    wrapper = NumpyArrayWrapper(np.ndarray, (1 << 27,), "C", np.dtype("f8"), allow_mmap=False,
                                numpy_array_alignment_bytes=None)
    path = _write(tmp_path, "claim.joblib", pickle.dumps(wrapper, protocol=4) + b"\x00" * 16)
    with pytest.raises(UnsafePickleError, match=r"claim\.joblib: refused to load: a numpy array of shape "
                                                r"\(134217728,\) and dtype float64 is declared .*only 16 bytes"):
        safe_load(path)


def test_compressed_files_are_bounded_by_their_decompressed_size(tmp_path):
    path = _write(tmp_path, "packed.joblib", zlib.compress(CLAIMS["bytes"]))
    with pytest.raises(UnsafePickleError, match=r"packed\.joblib: refused to load"):
        safe_load(path)
    # a highly compressible real array: far larger than the compressed file, as large as its content
    real = tmp_path / "zeros.joblib"
    joblib.dump({"a": np.zeros((2000, 500), dtype=np.float32)}, real, compress=3)
    assert real.stat().st_size < 100_000
    assert safe_load(real)["a"].shape == (2000, 500)


class _Plain:
    """Anything a dataset file may legitimately hold, across protocols."""

    @staticmethod
    def value():
        rng = np.random.default_rng(0)
        return {
            "f32": rng.normal(size=(7, 5, 3)).astype(np.float32),
            "fortran": np.asfortranarray(rng.normal(size=(4, 6))),
            "i64": np.arange(10, dtype=np.int64),
            "objects": np.array(["a", "héllo", None, 3], dtype=object),
            "object_2d": np.array([[1, None], ["x", 2.5]], dtype=object),
            "records": np.array([(1.0, "x"), (2.0, None)], dtype=[("a", "f8"), ("b", "O")]),
            "empty": np.zeros((0, 3), dtype=np.float32),
            "scalar": np.float64(2.5),
            "bytes": b"\x00\xffabc",
            "bytearray": bytearray(b"xyz"),
            "set": {1, 2, 3},
            "frozenset": frozenset({"a"}),
            "ordered": OrderedDict([("k", 1)]),
            "complex": 1 + 2j,
            "nested": [("t", 1), {"d": [1.5, None, True]}],
        }


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_real_files_of_every_protocol_still_load(tmp_path, protocol):
    value = _Plain.value()
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    got = safe_load(path)
    assert got.keys() == value.keys()
    for key, v in value.items():
        if isinstance(v, np.ndarray):
            assert got[key].dtype == v.dtype and got[key].shape == v.shape
            assert got[key].tolist() == v.tolist()
        else:
            assert got[key] == v and type(got[key]) is type(v)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_large_real_arrays_load(tmp_path, protocol):
    """No absolute cap: 40 MB of features load at every protocol (the bound is relative to the file)."""
    d = make_dataset_dict()
    d["train"]["audio"] = np.ones((30, 20, 5), np.float32)
    d["train"]["big"] = np.ones((10_000, 1000), np.float32)
    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    ds = load_dataset(path)
    assert ds["train"].n == 30 and ds.extra == {}


def test_saved_datasets_and_joblib_still_load(tmp_path):
    path = tmp_path / "d.pkl"
    save_dataset(make_dataset_dict(), path)
    assert load_dataset(path)["valid"].n == 10
    for compress in (0, 3, ("bz2", 3), ("xz", 3)):
        jpath = tmp_path / "d.joblib"
        joblib.dump(make_dataset_dict(), jpath, compress=compress)
        assert load_dataset(jpath)["test"].n == 12


# ----------------------------------------------------------------------------------------------
# .npz feature files


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _npy_bytes(shape, dtype, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def test_npz_real_feature_files_pass(tmp_path):
    feats = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float32)
    ids = np.array([f"v{i}" for i in range(6)])
    check_npz_claims(_npz(tmp_path / "a.npz", ids=ids, features=feats, lengths=np.full(6, 4)))
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, ids=ids, features=np.zeros((200, 50, 20), np.float32), lengths=np.zeros(200))
    check_npz_claims(compressed)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_npz_header_claim_beyond_member_is_refused(tmp_path, compression):
    path = tmp_path / "claim.npz"
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("ids.npy", _npy_bytes((2,), "<U2", "a\0\0\0b\0\0\0".encode("latin1") * 2))
        z.writestr("features.npy", _npy_bytes((1 << 20, 1 << 10, 64), "<f4", b"\0" * 64))
    with pytest.raises(DatasetError, match=r"claim\.npz \[audio features, member 'features'\]: the header declares "
                                           r"shape \(1048576, 1024, 64\) of float32 .* but the member holds 64 bytes"):
        check_npz_claims(path, "audio features")


def test_npz_member_size_beyond_compression_limit_is_refused(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("features.npy", _npy_bytes((4, 4), "<f4", b"\0" * 64))
    data = bytearray(path.read_bytes())
    # inflate the member's declared uncompressed size in both zip headers (offset 22 local, 24 central)
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    for offset in (local + 22, central + 24):
        data[offset:offset + 4] = (3_000_000_000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"bomb\.npz \[member 'features'\]: declares 3,000,000,000 bytes"):
        check_npz_claims(path)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))  # a plain .npy under a .npz name
    with pytest.raises(DatasetError, match=r"x\.npz( \[vision features\])?: expected an \.npz archive"):
        check_npz_claims(str(path), "vision features")
    with pytest.raises(DatasetError, match="no such file"):
        check_npz_claims(tmp_path / "missing.npz")
    with pytest.raises(DatasetError, match="not a file"):
        check_npz_claims(tmp_path)
