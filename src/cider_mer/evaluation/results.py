"""The protocol's product: :class:`EvalResults`, written as ``results.json``.

``results.json`` schema (unchanged since the first release, so old files still load):
``missing_mode``, ``split``, ``rates`` (floats; empty for SMM; the mean rate of per-modality
points), ``points`` (rates, ``t0.1/a0.5/v0.7`` per-modality points or SMM subsets, as strings),
``modality_rates`` (only for per-modality points: [text, audio, vision] per point), ``seeds`` (mask
seeds), ``task``, ``metrics`` (NAME -> ``mean``/``std`` per point and ``per_seed`` [seed][point], in
percent for accuracies and F1), ``auilc`` / ``auilc_std`` (NAME -> float; only with >= 2 numeric
rates, or >= 2 per-modality points on one axis, integrated over their mean rate),
``tau_selection`` (how tau was chosen, in words), ``tau`` (``mean`` per point and ``per_seed``; or,
for the labelled oracle, NAME -> mean tau per point), ``config`` (the run's settings), ``run_dir``,
``data``, ``versions`` (with the git commit), ``seconds``, ``command`` (the ``cider`` command line,
null from Python) and ``device``. Tasks with named classes (``emotion``) add ``classes``:
``names`` (class id -> name), ``per_class_f1`` (NAME -> ``mean``/``std``/``per_seed`` in percent,
null where a class is neither true nor predicted), ``confusion`` ((C, C) counts, row = true class,
column = predicted, mean over seeds) and ``confusion_point`` (the complete-data point it was taken
at).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class MetricCurve:
    """One metric over the evaluation points: mean and std over mask seeds, and every seed's value."""

    mean: list[float]
    std: list[float]
    per_seed: list[list[float]]  # [seed][point]


@dataclass
class EvalResults:
    """Results of :func:`~cider_mer.evaluation.protocol.evaluate` for one run, split and missing mode."""

    missing_mode: str
    split: str
    rates: list[float]  # the numeric rates (empty for SMM, whose points are modality subsets)
    points: list[str]
    seeds: list[int]
    task: str
    metrics: dict[str, MetricCurve]
    tau_selection: str  # how tau was chosen, in words ("oracle: ..." when test labels chose it)
    tau_mean: Optional[list[float]] = None  # per point (validation-chosen tau)
    tau_per_seed: Optional[list[list[float]]] = None
    oracle_tau: Optional[dict[str, list[float]]] = None  # metric -> mean tau per point (oracle only)
    auilc: dict[str, float] = field(default_factory=dict)
    auilc_std: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    run_dir: Optional[str] = None
    data: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    class_names: Optional[list[str]] = None  # tasks with named classes only (emotion)
    per_class_f1: dict[str, MetricCurve] = field(default_factory=dict)  # class name -> F1 (%) per point
    confusion: Optional[list[list[float]]] = None  # (C, C) at confusion_point, row true, column predicted
    confusion_point: Optional[str] = None
    command: Optional[str] = None  # the ``cider`` command line (None when called from Python)
    device: Optional[str] = None  # e.g. "cpu" or "cuda:0 (NVIDIA H200)"
    modality_rates: Optional[list[list[float]]] = None  # [text, audio, vision] per point (per-modality points)

    @property
    def is_oracle(self) -> bool:
        return self.oracle_tau is not None

    @property
    def numeric(self) -> bool:
        """Whether the points are missing rates (else SMM subsets)."""
        return bool(self.rates)

    @property
    def per_modality(self) -> bool:
        """Whether the points are (text, audio, vision) rate triples."""
        return self.modality_rates is not None

    def at_rate(self, metric: str, rate: float) -> Optional[float]:
        """Mean of ``metric`` at missing rate ``rate`` (None when that rate was not evaluated; always
        None for per-modality points, which have no single rate)."""
        rates = [] if self.per_modality else [float(r) for r in self.rates]
        return self.metrics[metric].mean[rates.index(float(rate))] if float(rate) in rates else None

    def tau_at_rate(self, rate: float) -> Optional[float]:
        rates = [] if self.per_modality else [float(r) for r in self.rates]
        if self.tau_mean is None or float(rate) not in rates:
            return None
        return self.tau_mean[rates.index(float(rate))]

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` object."""
        tau: dict[str, Any] = (dict(self.oracle_tau) if self.is_oracle
                               else {"mean": self.tau_mean, "per_seed": self.tau_per_seed})
        curve = lambda c: {"mean": c.mean, "std": c.std, "per_seed": c.per_seed}  # noqa: E731
        out = {
            "missing_mode": self.missing_mode, "split": self.split, "rates": self.rates, "points": self.points,
            **({"modality_rates": self.modality_rates} if self.per_modality else {}),
            "seeds": self.seeds, "task": self.task,
            "metrics": {k: curve(c) for k, c in self.metrics.items()},
            "auilc": self.auilc, "auilc_std": self.auilc_std, "tau_selection": self.tau_selection, "tau": tau,
            "config": self.config, "run_dir": self.run_dir, "data": self.data, "versions": self.versions,
            "seconds": self.seconds, "command": self.command, "device": self.device,
        }
        if self.class_names is not None:
            out["classes"] = {"names": self.class_names,
                              "per_class_f1": {k: curve(c) for k, c in self.per_class_f1.items()},
                              "confusion": self.confusion, "confusion_point": self.confusion_point}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalResults":
        """Read a ``results.json`` object (any version of the schema above)."""
        tau = d.get("tau") or {}
        oracle = "mean" not in tau
        classes = d.get("classes") or {}
        nan = lambda xs: [float("nan") if x is None else float(x) for x in xs]  # noqa: E731  (JSON null = NaN)
        return cls(
            missing_mode=d["missing_mode"], split=d["split"], rates=[float(r) for r in d.get("rates", [])],
            points=[str(p) for p in d.get("points", d.get("rates", []))], seeds=[int(s) for s in d["seeds"]],
            task=d["task"],
            metrics={k: MetricCurve(list(v["mean"]), list(v["std"]), [list(r) for r in v.get("per_seed", [])])
                     for k, v in d["metrics"].items()},
            tau_selection=d.get("tau_selection", ""),
            tau_mean=None if oracle else list(tau["mean"]), tau_per_seed=None if oracle else tau.get("per_seed"),
            oracle_tau=dict(tau) if oracle else None,
            auilc=dict(d.get("auilc", {})), auilc_std=dict(d.get("auilc_std", {})), config=d.get("config", {}),
            run_dir=d.get("run_dir"), data=d.get("data", {}), versions=d.get("versions", {}),
            seconds=float(d.get("seconds", 0.0)), command=d.get("command"), device=d.get("device"),
            modality_rates=[[float(x) for x in r] for r in d["modality_rates"]] if d.get("modality_rates") else None,
            class_names=classes.get("names"),
            per_class_f1={k: MetricCurve(nan(v["mean"]), nan(v["std"]), [nan(r) for r in v.get("per_seed", [])])
                          for k, v in classes.get("per_class_f1", {}).items()},
            confusion=classes.get("confusion"), confusion_point=classes.get("confusion_point"),
        )
