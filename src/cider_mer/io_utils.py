"""Small file helpers shared by every part of the tool: atomic writes, writable outputs, content
hashes, versions and the record of a run (command, version, commit, device)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional

from cider_mer.errors import CiderError

STALE_TEMP_SECONDS = 24 * 3600  # a temp file of another host counts as abandoned after this long
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


class OutputError(CiderError):
    """An output path that cannot be written (a file where a folder is needed, no write permission...)."""


def current_umask() -> int:
    """The process umask, read without changing it where ``/proc`` allows (other threads may be
    creating files meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)  # no /proc: the classic read, which sets the umask for an instant
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode ``open`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0o777 less the umask."""
    return 0o777 & ~current_umask()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _temp_prefix(target: Path) -> str:
    """Temp files of ``target`` are ``.NAME.HOST-PID-RANDOM.tmp``: hidden, and known by their writer."""
    return f".{target.name}.{_HOST}-{os.getpid()}-"


def remove_stale_temps(target: Path) -> None:
    """Remove temp files of ``target`` left by killed writers: those of a dead process on this host,
    and those of other hosts older than :data:`STALE_TEMP_SECONDS`. Live writers' temps stay."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[^.]+\.tmp$")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            if m["host"] == _HOST:
                stale = int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
            else:
                stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
            if stale:
                os.unlink(entry.path)
        except OSError:
            pass  # another writer removed it first


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    On any exception the temporary file is removed and ``path`` is left as it was. The finished
    file gets the usual mode (0o666 less the umask), whatever the writer created; temp files that
    killed writers left for the same target are removed first (:func:`remove_stale_temps`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())  # mkstemp (and some writers, e.g. safetensors) create 0600
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


def _unwritable_dir(target: Path) -> Optional[str]:
    """Why ``target`` cannot be (made) a writable folder, or None when it can."""
    probe = target
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe} is a dangling symbolic link"
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return "it is a file; a folder is needed" if probe == target else f"{probe} is a file"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{'it' if probe == target else probe} is not writable (permission denied or read-only file system)"
    return None


def ensure_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Check, before any work, that ``path`` is (or can be made) a writable folder; returns it.

    Nothing is created. Raises :class:`OutputError` naming ``what`` and the path when ``path`` is a
    file, lies under a file, or sits in a folder this process may not write to.
    """
    target = Path(path)
    reason = _unwritable_dir(target)
    if reason is not None:
        raise OutputError(f"{what} {target}: cannot write there: {reason}")
    return target


def ensure_writable_file(path: str | os.PathLike, what: str) -> Path:
    """Check, before any work, that the file ``path`` can be written (atomically, in its folder)."""
    target = Path(path)
    reason = "it is a folder; a file path is needed" if target.is_dir() else _unwritable_dir(target.parent)
    if reason is not None:
        raise OutputError(f"{what} {target}: cannot write there: {reason}")
    return target


def versions() -> dict[str, Optional[str]]:
    """Versions of Python and the libraries that change results, and the project's git commit
    (:func:`git_commit`); stored in every results file."""
    import importlib.metadata as md

    out: dict[str, Optional[str]] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("cider-mer", "torch", "transformers", "numpy", "scikit-learn", "optuna"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    out["git"] = git_commit()
    return out


@lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    """The short commit of the checkout this package runs from (``+dirty`` with uncommitted changes
    to tracked files); None when it is not run from a git checkout of the project or git is absent."""
    import subprocess

    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if package != top / "src" / package.name:  # e.g. installed in a virtualenv inside some repository
            return None
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


_COMMAND: Optional[str] = None


def set_command_line(args: Optional[list[str]]) -> None:
    """Remember the ``cider`` command this process runs (the CLI calls it; None: called from Python)."""
    import shlex

    global _COMMAND
    _COMMAND = None if args is None else shlex.join(["cider", *args])


def command_line() -> Optional[str]:
    """The ``cider ...`` command this process runs, shell-quoted; None when not run from the CLI."""
    return _COMMAND


def run_record(device: Optional[str] = None) -> dict[str, Any]:
    """What produced an output: the ``cider`` command line (None outside the CLI), the versions
    (with the git commit) and the device (e.g. ``cpu`` or ``cuda:0 (NVIDIA H200)``)."""
    return {"command": command_line(), "device": device, "versions": versions()}


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
