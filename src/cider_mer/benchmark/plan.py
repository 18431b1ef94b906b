"""What a benchmark runs: its rows (models, with or without MACI), the three Table IV settings, and
which training data each setting's runs use.

Rows. Each requested model is trained the way ``cider train --model M`` trains it: CIDer with MSSD
and MACI (MCM head and counterfactual text; no MACI for regression), every baseline with its own
objective, its registered default settings and a plain linear head without counterfactual text.
``--maci-plugins dlf,mplmm`` adds rows ``DLF+MACI``, ``MPLMM+MACI``: the same baseline with MACI on.
Run-level settings (encoder, epochs, patience, batch size, length buckets, device ...) come from
one base for every row. MPLMM's stage-1 pre-training (``pretrain_epochs``, 40 by default) is cut to
``min(40, epochs // 2)`` so that fine-tuning epochs, the only ones that can be selected, remain.

Settings (Table IV's column groups): RMFM on the IID test split (AUILC), complete data on the OOD
test split (the rate-0 point of the OOD evaluation) and RMFM on the OOD test split (AUILC).

Training data. When the IID and OOD files hold the same train and valid splits (every array: ids,
labels, features, as ``cider data synth`` and ``cider data synth --ood`` make them), each (row,
seed) is trained once, on the IID file, and evaluated on both test splits (``eval_iid/``,
``eval_ood/``). Otherwise (e.g. a file from ``cider data ood-split``) it is trained on each file's
own train/valid splits, in ``runs/<row>/iid/`` and ``runs/<row>/ood/``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cider_mer.ablation.run import NamedConfig, SuiteGrid, run_dir_for
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import MerDataset
from cider_mer.errors import ConfigError

DEFAULT_MODELS = ("cider", "dlf", "mplmm", "lnln", "emt_dlfr", "mult")
MACI_SUFFIX = "+maci"
LABELS = {"cider": "CIDer", "mult": "MulT", "dlf": "DLF", "mplmm": "MPLMM", "lnln": "LNLN", "emt_dlfr": "EMT-DLFR",
          "late_fusion": "Late fusion"}
MPLMM_PRETRAIN_CAP = 40  # the published stage-1 length, kept when the epoch budget allows


@dataclass(frozen=True)
class Setting:
    """One Table IV column group: which test split, and which figure of its evaluation."""

    key: str
    label: str  # as in the paper: missing type / test distribution
    test: str  # "iid" or "ood": the file whose test split is evaluated
    figure: str  # "auilc" (over the missing rates) or "rate0" (complete data)


SETTINGS: tuple[Setting, ...] = (
    Setting("iid_rmfm", "RMFM/IID", "iid", "auilc"),
    Setting("ood_complete", "-/OOD", "ood", "rate0"),
    Setting("ood_rmfm", "RMFM/OOD", "ood", "auilc"),
)


@dataclass(frozen=True)
class TrainingSet:
    """The train/valid splits some runs are trained on, and the test files those runs are evaluated on."""

    key: str  # "shared" (both files' train/valid are the same), "iid" or "ood"
    source: str  # "iid" or "ood": the file whose train/valid splits are used
    data_path: Path
    tests: tuple[str, ...]  # which of "iid" / "ood" test splits its runs evaluate

    def subdir(self, test: str) -> str:
        """The run subfolder holding the evaluation on the ``test`` file's test split."""
        return f"eval_{test}"


@dataclass(frozen=True)
class BenchRow:
    """One table row: a model with or without MACI, and the configuration it trains."""

    key: str  # "dlf", "dlf+maci", "cider"
    label: str  # "DLF", "DLF+MACI", "CIDer"
    model: str
    maci: bool
    config: TrainConfig

    def named(self, training: TrainingSet, shared: bool) -> NamedConfig:
        """The suite entry of this row on one training set (its run folder is its name)."""
        name = self.key.replace("+", "_") if shared else f"{self.key.replace('+', '_')}/{training.key}"
        return NamedConfig(name, self.config, self.label, f"{self.label} trained on {training.key} train/valid")


def model_label(model: str) -> str:
    return LABELS.get(model, model)


def _names(spec: Optional[str | Sequence[str]], what: str) -> list[str]:
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec or [])
    names = [n for n in names if n]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{what}: {dupes} given more than once")
    return names


def row_config(base: TrainConfig, model: str, maci: bool) -> TrainConfig:
    """``base``'s run-level settings for ``model`` (its registered defaults unless ``base`` is that
    model already), with MACI on or off; MPLMM's pre-training cut to fit the epochs."""
    changes: dict = {}
    if model == "mplmm":
        from cider_mer.models.registry import make_config

        pre = (base.model_config if base.model == "mplmm" else make_config("mplmm", None)).pretrain_epochs
        changes["model_config"] = {"pretrain_epochs": min(pre, MPLMM_PRETRAIN_CAP, base.epochs // 2)}
    cfg = base.with_overrides(model=model, **changes)
    cfg = dataclasses.replace(cfg, head="mcm" if maci else "linear", counterfactual=maci)
    return TrainConfig.from_dict(cfg.to_dict())  # validated again (e.g. MACI and regression)


def build_rows(base: TrainConfig, models: str | Sequence[str], maci_plugins: Optional[str | Sequence[str]] = None
               ) -> list[BenchRow]:
    """Table IV's row order: the baselines as given, their ``+MACI`` rows, then CIDer (when asked)."""
    from cider_mer.models.registry import get_spec

    names = _names(models, "--models")
    plugins = _names(maci_plugins, "--maci-plugins")
    if not names:
        raise ConfigError("--models: at least one model is needed")
    for n in names + plugins:
        get_spec(n)
    if plugins and base.task == "regression":
        raise ConfigError("--maci-plugins: MACI needs classes, so it cannot run with --task regression; "
                          "leave out --maci-plugins (CIDer runs without MACI there)")
    if "cider" in plugins:
        raise ConfigError("--maci-plugins: CIDer has MACI already; name baselines only (e.g. dlf,mplmm)")
    with_maci = base.task != "regression"
    rows = [BenchRow(n, model_label(n), n, False, row_config(base, n, False)) for n in names if n != "cider"]
    rows += [BenchRow(n + MACI_SUFFIX, model_label(n) + "+MACI", n, True, row_config(base, n, True)) for n in plugins]
    if "cider" in names:
        rows.append(BenchRow("cider", model_label("cider"), "cider", with_maci, row_config(base, "cider", with_maci)))
    return rows


def shares_training_data(a: MerDataset, b: MerDataset) -> bool:
    """Whether two datasets hold the same train and valid splits (every array equal, same alignment)."""
    if a.aligned != b.aligned or a.convention != b.convention:
        return False
    for name in ("train", "valid"):
        sa, sb = a.splits.get(name), b.splits.get(name)
        if sa is None or sb is None:
            return False
        for f in dataclasses.fields(sa):
            va, vb = getattr(sa, f.name), getattr(sb, f.name)
            if not isinstance(va, np.ndarray) and not isinstance(vb, np.ndarray):
                continue  # the split's name and label convention (compared above)
            if (va is None) != (vb is None):
                return False
            if va is not None and (va.shape != vb.shape or not np.array_equal(
                    va, vb, equal_nan=va.dtype.kind == "f")):  # categorical files: NaN scores
                return False
    return True


def training_sets(iid_path: Path, ood_path: Path, shared: bool) -> list[TrainingSet]:
    if shared:
        return [TrainingSet("shared", "iid", iid_path, ("iid", "ood"))]
    return [TrainingSet("iid", "iid", iid_path, ("iid",)), TrainingSet("ood", "ood", ood_path, ("ood",))]


@dataclass
class BenchmarkSettings(SuiteGrid):
    """Everything that defines one benchmark (stored in ``benchmark.json``)."""

    base: TrainConfig
    iid_path: Path
    ood_path: Path
    out: Path
    rows: list[BenchRow]
    seeds: list[int]
    shared: bool
    eval_seeds: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    command: Optional[str] = None

    @property
    def training_sets(self) -> list[TrainingSet]:
        return training_sets(self.iid_path, self.ood_path, self.shared)

    def training_for(self, test: str) -> TrainingSet:
        """The training set whose runs are evaluated on the ``test`` file."""
        return next(t for t in self.training_sets if test in t.tests)

    def run_dir(self, row: BenchRow, training: TrainingSet, seed: int) -> Path:
        return run_dir_for(self.out, row.named(training, self.shared).name, seed)

    def check_protocol(self) -> None:
        """The complete-data column is the rate-0 point and AUILC needs two rates or more."""
        if 0.0 not in [float(r) for r in self.rates] or len(self.rates) < 2:
            raise ConfigError(f"--rates: the benchmark needs rate 0 (the complete-data column) and at least two "
                              f"rates (AUILC), got {self.rates}")
        if not self.eval_seeds:
            raise ConfigError("--eval-seeds: at least one evaluation seed is needed")
