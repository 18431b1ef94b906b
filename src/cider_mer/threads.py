"""How many CPU threads torch uses.

- ``OMP_NUM_THREADS``, when set, is what torch reads at start-up; nothing here overrides it;
- ``cider --threads N`` (or :func:`set_threads`) sets it for the whole process;
- a tuning worker (:func:`worker_threads`) uses 1 thread unless one of the two above says
  otherwise: workers share a machine, and a tiny trial gains little from more threads.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional

from cider_mer.errors import ConfigError

_REQUESTED: Optional[int] = None  # the value of --threads in this process


def set_threads(n: int) -> None:
    """Use ``n`` >= 1 intra-op threads in torch from now on (``cider --threads N``)."""
    global _REQUESTED
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {n!r}")
    import torch

    torch.set_num_threads(n)
    _REQUESTED = n


def requested_threads() -> Optional[int]:
    """The thread count set with :func:`set_threads` in this process, or None."""
    return _REQUESTED


@contextmanager
def worker_threads(threads: Optional[int] = None) -> Iterator[int]:
    """Run a tuning worker's block with ``threads`` torch threads; by default the ``--threads``
    value, else torch's own count when ``OMP_NUM_THREADS`` is set, else 1. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads is None:
        threads = requested_threads()
    if threads is None:
        threads = before if os.environ.get("OMP_NUM_THREADS") else 1
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
