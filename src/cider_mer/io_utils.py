"""Small file helpers shared by every part of the tool: atomic writes, content hashes, versions."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; finished files get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples into plain JSON types."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not valid JSON
        return None
    return obj


def json_normal(obj: Any) -> Any:
    """JSON round trip, so stored and freshly built settings compare equal."""
    return json.loads(json.dumps(to_jsonable(obj)))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def update_marked_section(path: str | os.PathLike, tag: str, section: str) -> None:
    """Replace the text between ``<!-- tag:begin -->`` and ``<!-- tag:end -->`` in a Markdown file
    (appending the block when absent), atomically. Benchmarks use it to refresh their tables."""
    import re

    p = Path(path)
    text = p.read_text(encoding="utf-8") if p.is_file() else "# Results\n"
    block = f"<!-- {tag}:begin -->\n{section.strip()}\n<!-- {tag}:end -->"
    pattern = rf"<!-- {re.escape(tag)}:begin -->.*?<!-- {re.escape(tag)}:end -->"
    if re.search(pattern, text, flags=re.S):
        text = re.sub(pattern, lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(p, text)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's contents; a file that is not readable JSON is a CiderError naming it (a missing
    file stays FileNotFoundError)."""
    from cider_mer.errors import CiderError

    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise CiderError(f"{path}: is a directory; expected a JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CiderError(f"{path}: not readable as JSON ({type(exc).__name__}: {detail})") from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (used to key caches by content)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that change results; stored in every results file."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("cider-mer", "torch", "transformers", "numpy", "scikit-learn", "optuna"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write atomically as PNG (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
