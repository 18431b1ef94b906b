"""Named training presets shared by the demo, the ablation suite, tuning and the benchmarks."""

from __future__ import annotations

from typing import Any

from cider_mer.config import TrainConfig

DEMO_MODEL = {"layers": 2, "heads": 2}


def fast_bf16_available() -> bool:
    """Whether this CPU has native bf16 matrix instructions (else bf16 autocast would be slower)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    check = getattr(cpu, "_is_avx512_bf16_supported", None) or getattr(cpu, "_is_amx_tile_supported", None)
    try:
        return bool(check()) if check else False
    except RuntimeError:
        return False


def cpu_friendly_config(task: str = "binary", epochs: int = 12, seed: int = 1111, **changes: Any) -> TrainConfig:
    """The demo's settings: the frozen default encoder with cached features (run under bf16 autocast
    where the CPU has bf16 instructions), a 2-layer MCT with 2 heads and batches of similar text
    length; everything else the paper's defaults (fp32, 3 layers, 8 heads and random batches are
    `cider train`'s defaults). Patience max(3, epochs // 3)."""
    return TrainConfig(task=task, freeze_text_encoder=True, epochs=epochs, patience=max(3, epochs // 3), seed=seed,
                       model_config=dict(DEMO_MODEL), length_buckets=True,
                       **{"encoder_precision": "bf16" if fast_bf16_available() else "fp32", **changes})
