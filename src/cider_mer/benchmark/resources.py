"""What one training run costs: its peak memory and the machine it ran on (Table VI's columns).

Peak memory is measured around the training call of each run (:class:`PeakMemory`, the
``measure`` hook of :func:`cider_mer.ablation.run.run_one`) and stored in the run folder as
``peak_memory.json``, so a resumed suite still reports it:

- on a GPU: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only,
  the encoder on the device included);
- on a CPU under Linux: the process's peak resident set size during the run (``VmHWM`` of
  ``/proc/self/status``, reset to the current size through ``/proc/self/clear_refs`` before the
  run). It includes what the process already held when the run started (Python, torch, the
  shared encoder, the data, and heap the allocator kept from earlier runs), stored as
  ``start_bytes`` beside it: later rows of one invocation can carry a little of earlier rows'
  heap. This avoids a child process per run (which would reload torch, the encoder and the data);
  for a clean CPU figure of one model, run the benchmark with that model alone;
- elsewhere: ``ru_maxrss``, the process's peak since it started, which is monotonic over the runs
  of one invocation; the label says so.

A run continued in a later session keeps the larger of the two sessions' peaks.
"""

from __future__ import annotations

import platform
import resource
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from cider_mer.io_utils import atomic_write_json, read_json
from cider_mer.runs import LOG_FILE

PEAK_FILE = "peak_memory.json"
GIB = 2**30
KINDS = {
    "cuda_max_allocated": "GPU memory, torch.cuda.max_memory_allocated during training",
    "rss_per_run": "peak RSS of the process during training (VmHWM reset before each run; includes what the "
                   "process held at the run's start: Python, torch, the encoder, the data, heap kept from "
                   "earlier runs; start_bytes in benchmark.json)",
    "rss_process": "peak RSS of the whole process so far (ru_maxrss; not reset between runs, so an upper "
                   "bound that grows over the runs)",
}
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def device_name(device: Any) -> str:
    """The GPU's name for a CUDA device, else the CPU's model name."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _vm_hwm_bytes() -> Optional[int]:
    try:
        for line in _STATUS.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0); False when not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _vm_hwm_bytes() is not None


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _epochs_logged(run_dir: Path) -> int:
    path = run_dir / LOG_FILE
    if not path.is_file():
        return 0
    return max(0, len(path.read_text(encoding="utf-8").strip().splitlines()) - 1)


@dataclass
class PeakRecord:
    """One run's peak memory (``peak_memory.json``)."""

    bytes: int
    kind: str  # a key of KINDS
    device: str
    device_name: str
    start_bytes: Optional[int] = None  # what was already counted when the run started (RSS kinds)

    @property
    def gib(self) -> float:
        return self.bytes / GIB

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "gib": round(self.gib, 4), "kind": self.kind, "label": KINDS[self.kind],
                "device": self.device, "device_name": self.device_name, "start_bytes": self.start_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PeakRecord":
        start = d.get("start_bytes")
        return cls(int(d["bytes"]), str(d["kind"]), str(d["device"]), str(d["device_name"]),
                   None if start is None else int(start))

    @classmethod
    def read(cls, run_dir: Path) -> Optional["PeakRecord"]:
        try:
            return cls.from_dict(read_json(Path(run_dir) / PEAK_FILE))
        except (OSError, ValueError, KeyError, TypeError):
            return None


class PeakMemory:
    """``measure(run_dir)``: a context manager recording the training call's peak memory on ``device``
    into ``run_dir/peak_memory.json`` (only when the call trained at least one epoch)."""

    def __init__(self, device: Any):
        self.device = device
        self.device_name = device_name(device)

    @contextmanager
    def __call__(self, run_dir: Path) -> Iterator[None]:
        import torch

        before = _epochs_logged(run_dir)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            kind = "cuda_max_allocated"
            start = int(torch.cuda.memory_allocated(self.device))
        else:
            kind = "rss_per_run" if _reset_hwm() else "rss_process"
            start = _vm_hwm_bytes() if kind == "rss_per_run" else _ru_maxrss_bytes()
        yield
        if _epochs_logged(run_dir) <= before:
            return  # nothing was trained now (the run had finished): keep what is stored
        if cuda:
            torch.cuda.synchronize(self.device)
            peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            peak = (_vm_hwm_bytes() if kind == "rss_per_run" else None) or _ru_maxrss_bytes()
        stored = PeakRecord.read(run_dir)
        if stored is not None and stored.kind == kind and stored.bytes > peak:
            peak, start = stored.bytes, stored.start_bytes
        record = PeakRecord(peak, kind, str(self.device), self.device_name, start)
        atomic_write_json(Path(run_dir) / PEAK_FILE, record.to_dict())
