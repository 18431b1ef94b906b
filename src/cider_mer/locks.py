"""One writer per output folder.

A writer holds an OS advisory lock (``fcntl.flock``, exclusive) on a lock file: ``.cider.lock``
inside a run, tuning or ablation folder, or ``.NAME.lock`` beside a folder that is replaced as a
whole (an evaluation report). The kernel drops the lock when its process ends in any way (exit,
crash, SIGKILL), so a dead writer never leaves a folder stuck; the lock file itself stays (its text
is only informative). The holder writes its pid, host, start time and command into the file, so a
second writer gets a :class:`FolderInUseError` (CLI exit 2) naming the folder and the holder.

:func:`claim_dir` adds the other half of "no half-made outputs": when the block fails before the
caller called :meth:`Claim.keep`, what this process created in the folder (or the folder itself)
is removed again; what earlier runs wrote is never touched.

Locks are per open file: a second lock of the same folder in the same process fails like one from
another process. Over NFS, Linux maps ``flock`` to NFS byte-range locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from cider_mer.errors import CiderError
from cider_mer.io_utils import command_line, ensure_writable_dir, file_mode

LOCK_NAME = ".cider.lock"


class FolderInUseError(CiderError):
    """Another process holds the folder's lock."""


def _holder_text(fd: int) -> str:
    """The holder as its lock file describes it: ``pid P on host H since T: COMMAND``."""
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        return f"pid {info['pid']} on host {info['host']} since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


@dataclass
class Lock:
    """A held lock (see :func:`acquire`); :meth:`release` lets it go."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)  # nobody holds it now
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


def acquire(lock_file: str | os.PathLike, what: str, wait: float = 0.0) -> Lock:
    """Lock ``lock_file`` (created if needed; its folder must exist) for this process.

    ``wait``: seconds to keep trying while another process holds it (0: fail at once). Raises
    :class:`FolderInUseError` naming ``what`` and the holder.
    """
    path = Path(lock_file)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise FolderInUseError(f"{what}: in use by another writer ({holder}); wait for it to end or "
                                   "choose another folder") from None
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": command_line() or shlex.join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        return Lock(path, fd)


@contextmanager
def locked(lock_file: str | os.PathLike, what: str, wait: float = 0.0) -> Iterator[Lock]:
    """Hold the lock on ``lock_file`` for the block (see :func:`acquire`)."""
    Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
    lock = acquire(lock_file, what, wait)
    try:
        yield lock
    finally:
        lock.release()


def sibling_lock_file(folder: str | os.PathLike) -> Path:
    """The lock file of a folder that is replaced as a whole: ``.NAME.lock`` beside it."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _make_dirs(directory: Path) -> list[Path]:
    """``mkdir -p``; returns the folders this call created, the outermost first."""
    missing = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
            created.append(d)
        except FileExistsError:
            pass
    return created


@dataclass
class Claim:
    """A locked output folder held by :func:`claim_dir`."""

    directory: Path
    lock: Lock
    created: list[Path]  # folders this process created, outermost first
    existing: set[str] = field(default_factory=set)  # entries found in the folder once locked
    kept: bool = False

    def keep(self) -> None:
        """From now on the folder holds something worth keeping (e.g. a resumable epoch)."""
        self.kept = True

    def discard_new(self) -> None:
        """Remove what this process added: the folder itself if it made it, else its new entries."""
        if self.created:
            shutil.rmtree(self.directory, ignore_errors=True)
            for d in reversed(self.created[:-1]):  # parents made for it, when left empty
                try:
                    d.rmdir()
                except OSError:
                    break
            return
        for name in set(os.listdir(self.directory)) - self.existing:
            p = self.directory / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


@contextmanager
def claim_dir(directory: str | os.PathLike, what: str) -> Iterator[Claim]:
    """Check ``directory`` is writable, create it, lock it (``.cider.lock`` inside) for the block.

    If the block raises before :meth:`Claim.keep` was called, what this process created is
    removed (:meth:`Claim.discard_new`); a folder another writer holds raises
    :class:`FolderInUseError` and is left alone.
    """
    directory = Path(directory)
    ensure_writable_dir(directory, what)
    created = _make_dirs(directory)
    try:
        lock = acquire(directory / LOCK_NAME, f"{what} {directory}")
    except BaseException:
        for d in reversed(created):  # only when still empty: the holder may have filled it
            try:
                d.rmdir()
            except OSError:
                break
        raise
    claim = Claim(directory, lock, created, set(os.listdir(directory)))
    try:
        yield claim
    except BaseException:
        if not claim.kept:
            claim.discard_new()
        raise
    finally:
        lock.release()
