"""The ablation suite (the paper's Table V as one call): train, evaluate, resume, aggregate, write.

Layout under ``out``::

    runs/<variant>/seed<k>/          a normal run directory (config.json, model.safetensors, ...)
    runs/<variant>/seed<k>/eval/     its RMFM evaluation on the test split (results.json, .csv, .md, .png)
    ablation.md / .csv / .json / .png   the aggregate over variants and training seeds
    .cider.lock                      held by the one process running the suite (:mod:`cider_mer.locks`)

The work is split by job: :mod:`.run` trains/evaluates/resumes one (variant, seed),
:mod:`.aggregate` summarises the runs on disk as an :class:`~.aggregate.AblationTable`, and
:mod:`.render` writes it. This module runs the grid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from cider_mer.ablation.aggregate import AblationTable, aggregate
from cider_mer.ablation.render import write_outputs
from cider_mer.ablation.run import (
    DEFAULT_EPOCHS,
    DEFAULT_TRAINING_SEEDS,
    RunStatus,
    SuiteSettings,
    run_one,
    shared_encoder,
    training_seeds,
)
from cider_mer.ablation.variants import parse_variants
from cider_mer.config import TrainConfig
from cider_mer.evaluation.protocol import DEFAULT_EVAL_SEEDS
from cider_mer.metrics import RATES_DEFAULT

__all__ = ["run_ablation", "default_base_config", "DEFAULT_EPOCHS", "run_one", "aggregate", "write_outputs"]


def default_base_config(task: str = "binary", epochs: int = DEFAULT_EPOCHS) -> TrainConfig:
    """The CPU-friendly base used when no ``--config`` is given: the ``cider demo`` settings
    (frozen default MiniLM encoder with cached features, 2 MCT layers, 2 heads, length-bucketed
    batches; everything else the paper's defaults), ``epochs`` epochs with patience max(3, epochs // 3)."""
    from cider_mer.training.presets import cpu_friendly_config

    return cpu_friendly_config(task, epochs=epochs)


def run_ablation(base: TrainConfig, data_path: str | Path, out: str | Path, variants: Optional[Sequence[str] | str] = None,
                 n_seeds: int = DEFAULT_TRAINING_SEEDS, eval_seeds: Sequence[int] = DEFAULT_EVAL_SEEDS,
                 rates: Optional[Sequence[float]] = None, progress: bool = True,
                 log: Callable[[str], None] = print, command: Optional[str] = None, encoder=None) -> AblationTable:
    """Run (or continue) the ablation suite and return the aggregate written to ``out/ablation.json``.

    ``base``: the configuration every variant starts from (see :func:`default_base_config`).
    ``variants``: names or a comma list (default: all ten, in Table V order).
    ``n_seeds``: training seeds ``base.seed .. base.seed + n_seeds - 1``.
    ``encoder``: a text encoder to share; by default, with a frozen encoder, it is loaded once here.
    """
    from cider_mer.data.dataset import load_dataset
    from cider_mer.io_utils import ensure_writable_dir
    from cider_mer.locks import LOCK_NAME, locked
    from cider_mer.runs import check_cache_dir

    ensure_writable_dir(out, "ablation folder")
    check_cache_dir(base, data_path)
    settings = SuiteSettings(base=base, data_path=Path(data_path), out=Path(out), variants=parse_variants(variants),
                             seeds=training_seeds(base, n_seeds), eval_seeds=[int(s) for s in eval_seeds],
                             rates=[round(float(r), 4) for r in (rates if rates is not None else RATES_DEFAULT)],
                             command=command)
    entries = settings.entries()  # fails before any training when a variant cannot apply to this base
    if not settings.eval_seeds:
        raise ValueError("at least one evaluation seed is needed")
    with locked(settings.out / LOCK_NAME, f"ablation folder {settings.out}"):  # before any work: one suite per folder
        data = load_dataset(settings.data_path)
        encoder = shared_encoder(base, encoder)
        total = len(entries) * len(settings.seeds)
        log(f"ablation: {len(entries)} variant(s) x {len(settings.seeds)} training seed(s) = {total} run(s) "
            f"into {settings.out}")
        statuses: dict[tuple[str, int], RunStatus] = {}
        t0 = time.time()
        table = None
        for entry in entries:
            for seed in settings.seeds:
                statuses[(entry.name, seed)] = run_one(settings, entry, seed, data, encoder=encoder,
                                                       progress=progress, log=log)
            table = aggregate(settings, statuses, entries)
            write_outputs(table, settings.out)
    skipped = sum(1 for s in statuses.values() if s.status == "skipped")
    log(f"ablation finished in {time.time() - t0:.0f}s ({total - skipped} run(s) worked on, {skipped} skipped); "
        f"table in {settings.out / 'ablation.md'}")
    return table
