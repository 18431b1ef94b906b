"""Fixed sinusoidal position codes, indexed by time step.

The authors' module receives time-first tensors but indexes them as batch-first, so it adds a
code per *batch slot* instead of per time step; this one is indexed by time, as intended.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPositions(nn.Module):
    """``table[t, 2i] = sin(t / 10000^(2i/dim))`` and ``table[t, 2i+1] = cos(...)``, t < max_len."""

    def __init__(self, dim: int, max_len: int = 1024):
        super().__init__()
        steps = torch.arange(max_len, dtype=torch.float32)[:, None]
        frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(steps * frequencies)
        table[:, 1::2] = torch.cos(steps * frequencies[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    @property
    def max_len(self) -> int:
        return int(self.table.shape[0])

    def forward(self, length: int) -> torch.Tensor:
        """Codes of time steps 0 .. length-1: (length, dim)."""
        if length > self.max_len:
            raise ValueError(f"sequence of {length} steps exceeds the {self.max_len} position codes")
        return self.table[:length]
