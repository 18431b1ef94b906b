"""The ablation suite (the paper's Table V as one call): train, evaluate, resume, aggregate, write.

Layout under ``out``::

    runs/<variant>/seed<k>/          a normal run directory (config.json, model.safetensors, ...)
    runs/<variant>/seed<k>/eval/     its RMFM evaluation on the test split (results.json, .csv, .md, .png)
    ablation.md / .csv / .json / .png   the aggregate over variants and training seeds

Every variant is trained with training seeds ``base.seed, base.seed + 1, ...`` and evaluated with
:func:`cider_mer.evaluation.protocol.evaluate` (RMFM, rates 0.0..1.0, tau chosen on validation).
Per variant the suite reports AUILC and the rate-0 (complete data) value of each reported metric
as mean ± std over the training seeds (std with ddof=0, like the evaluation protocol); each
training seed's value is itself the mean over the evaluation seeds.

Resumption works per (variant, seed): a run whose ``eval/results.json`` exists with the same
settings is skipped; a run with a ``config.json`` but no evaluation is continued with
``train(..., resume=True)`` (which returns at once when training had finished) and then
evaluated. A run directory holding other settings stops the suite with :class:`RunError`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from cider_mer.ablation.variants import VARIANTS, changes_text, config_differences, get_variant, parse_variants
from cider_mer.io_utils import atomic_write_json, atomic_write_text, json_normal, read_json, versions
from cider_mer.metrics import RATES_DEFAULT
from cider_mer.training.config import TrainConfig
from cider_mer.training.trainer import CONFIG_FILE, LOG_FILE, RunError
from cider_mer.plots import save_figure

EVAL_DIR = "eval"
RESULTS_FILE = "results.json"
MISSING_MODE = "RMFM"
EVAL_SPLIT = "test"
DEFAULT_EPOCHS = 10
DEFAULT_TRAINING_SEEDS = 3
DEFAULT_EVAL_SEEDS = (0, 1, 2)
# The Table V metrics each task can give: Acc2 / F1 (Non0) from the binary task, Acc7 from seven.
REPORT_METRICS = {"binary": ("non0_acc2", "non0_f1", "acc3"), "seven": ("acc7", "f1_7")}
METRIC_LABELS = {"non0_acc2": "Acc2", "non0_f1": "F1", "acc3": "Acc3", "acc7": "Acc7", "f1_7": "F1 (7-class)"}
OUTPUT_FILES = ("ablation.md", "ablation.csv", "ablation.json", "ablation.png")


def default_base_config(task: str = "binary", epochs: int = DEFAULT_EPOCHS) -> TrainConfig:
    """The CPU-friendly base used when no ``--config`` is given: the ``cider demo`` settings
    (frozen default MiniLM encoder with cached features, 2 MCT layers, 2 heads, length-bucketed
    batches; everything else the paper's defaults), ``epochs`` epochs with patience max(3, epochs // 3)."""
    from cider_mer.demo import cpu_friendly_config

    return cpu_friendly_config(task, epochs=epochs)


def training_seeds(base: TrainConfig, n: int) -> list[int]:
    if n < 1:
        raise ValueError(f"the number of training seeds must be >= 1, got {n}")
    return [base.seed + i for i in range(n)]


def run_dir_for(out: str | Path, variant: str, seed: int) -> Path:
    return Path(out) / "runs" / variant / f"seed{seed}"


@dataclass
class SuiteSettings:
    """Everything that defines one ablation suite (stored in ``ablation.json``)."""

    base: TrainConfig
    data_path: Path
    out: Path
    variants: list[str]
    seeds: list[int]
    eval_seeds: list[int] = field(default_factory=lambda: list(DEFAULT_EVAL_SEEDS))
    rates: list[float] = field(default_factory=lambda: list(RATES_DEFAULT))
    command: Optional[str] = None

    @property
    def task(self) -> str:
        return self.base.task

    @property
    def metrics(self) -> tuple[str, ...]:
        return REPORT_METRICS[self.task]


# ----------------------------------------------------------------------------- one (variant, seed)


def _results_match(results: dict[str, Any], settings: SuiteSettings) -> bool:
    return (results.get("missing_mode") == MISSING_MODE and results.get("split") == EVAL_SPLIT
            and results.get("seeds") == [int(s) for s in settings.eval_seeds]
            and json_normal(results.get("rates")) == json_normal([float(r) for r in settings.rates]))


def _check_run_settings(run_dir: Path, cfg: TrainConfig, data_key: str) -> None:
    """Refuse a run directory that was trained with other settings or another dataset."""
    meta = read_json(run_dir / CONFIG_FILE)
    old = meta.get("train")
    if json_normal(old) != json_normal(cfg.to_dict()):
        try:
            diff = config_differences(TrainConfig.from_dict(old), cfg)
            detail = ", ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in diff.items())
        except (TypeError, ValueError):
            detail = "unreadable stored settings"
        raise RunError(f"{run_dir}: holds a run with other settings ({detail}); use another --out, "
                       "or the same --config/--epochs/--task as before")
    stored_key = meta.get("data", {}).get("sha256_16")
    if stored_key != data_key:
        raise RunError(f"{run_dir}: was trained on another dataset file (content {stored_key}, now {data_key}); "
                       "use another --out")


def _train_log_summary(run_dir: Path, selection: str) -> dict[str, Any]:
    path = run_dir / LOG_FILE
    if not path.is_file():
        return {}
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    if not rows:
        return {}
    key = f"val_{selection}"
    values = [float(r.get(key) or "nan") for r in rows]
    best = int(np.nanargmax(values)) if not all(math.isnan(v) for v in values) else 0
    return {"epochs_run": len(rows), "train_seconds": round(sum(float(r.get("train_seconds") or 0) for r in rows), 2),
            "best_epoch": int(rows[best]["epoch"]), f"best_val_{selection}": values[best]}


def run_one(settings: SuiteSettings, variant: str, seed: int, data, encoder=None, progress: bool = True,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or continue) and evaluate one (variant, training seed); returns its status record."""
    from cider_mer.data.labels import SELECTION_METRIC
    from cider_mer.evaluation.protocol import evaluate, load_run
    from cider_mer.evaluation.report import write_report
    from cider_mer.text.cache import dataset_key
    from cider_mer.training.trainer import train

    cfg = dataclasses.replace(get_variant(variant).apply(settings.base), seed=seed)
    run_dir = run_dir_for(settings.out, variant, seed)
    results_path = run_dir / EVAL_DIR / RESULTS_FILE
    data_key = dataset_key(settings.data_path)
    tag = f"[{variant} seed {seed}]"
    t0 = time.time()
    status = "trained"
    if (run_dir / CONFIG_FILE).is_file():
        _check_run_settings(run_dir, cfg, data_key)
        if results_path.is_file():
            try:
                old = read_json(results_path)
            except (OSError, ValueError):
                old = {}
            if _results_match(old, settings):
                log(f"{tag} skipped: evaluation exists ({results_path.relative_to(settings.out)})")
                return {"variant": variant, "seed": seed, "status": "skipped", "seconds": round(time.time() - t0, 2)}
        log(f"{tag} continuing the run in {run_dir.relative_to(settings.out)}")
        status = "resumed"
        result = train(cfg, data, settings.data_path, run_dir, resume=True, progress=progress, encoder=encoder)
    else:
        log(f"{tag} training into {run_dir.relative_to(settings.out)}")
        result = train(cfg, data, settings.data_path, run_dir, resume=False, progress=progress, encoder=encoder)
    t_train = time.time() - t0
    log(f"{tag} training done: best validation {SELECTION_METRIC[cfg.task]} {result.best_value:.2f} at epoch "
        f"{result.best_epoch}/{result.epochs_run} ({t_train:.0f}s now, {result.seconds:.0f}s in all)")
    t1 = time.time()
    loaded = load_run(run_dir, device=cfg.device, encoder=encoder)
    results = evaluate(loaded, data, settings.data_path, split=EVAL_SPLIT, mode=MISSING_MODE, rates=settings.rates,
                       seeds=settings.eval_seeds, progress=progress)
    write_report(results, run_dir / EVAL_DIR)
    t_eval = time.time() - t1
    shown = ", ".join(f"AUILC {METRIC_LABELS.get(m, m)} {results['auilc'][m]:.2f}"
                      for m in settings.metrics if m in results["auilc"])
    log(f"{tag} evaluated in {t_eval:.0f}s: {shown}")
    return {"variant": variant, "seed": seed, "status": status, "seconds": round(time.time() - t0, 2),
            "train_seconds_now": round(t_train, 2), "eval_seconds": round(t_eval, 2)}


# ----------------------------------------------------------------------------- aggregation


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if not len(v):
        return {"mean": None, "std": None, "per_seed": list(values)}
    return {"mean": float(v.mean()), "std": float(v.std()), "per_seed": [float(x) for x in values]}


def _param_counts(run_dir: Path) -> Optional[int]:
    """Parameters outside the text encoder, rebuilt from the run's config (no weights read)."""
    from cider_mer.models.interface import DataShapes
    from cider_mer.models.registry import build_model

    try:
        meta = read_json(run_dir / CONFIG_FILE)
        cfg = TrainConfig.from_dict(meta["train"])
        model = build_model(cfg.model, DataShapes(**meta["shapes"]), cfg.model_config, text_encoder=None,
                            maci=cfg.head == "mcm")
        return int(model.parameter_counts()["params_excluding_text_encoder"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def aggregate(settings: SuiteSettings, statuses: Optional[dict[tuple[str, int], dict[str, Any]]] = None) -> dict[str, Any]:
    """Collect every finished evaluation of the requested (variant, seed) pairs from disk."""
    from cider_mer.data.labels import SELECTION_METRIC
    from cider_mer.text.cache import dataset_key

    statuses = statuses or {}
    metrics = settings.metrics
    variants: dict[str, Any] = {}
    for name in settings.variants:
        var = VARIANTS[name]
        runs: dict[str, Any] = {}
        auilc: dict[str, list[float]] = {m: [] for m in metrics}
        rate0: dict[str, list[float]] = {m: [] for m in metrics}
        curves: dict[str, list[list[float]]] = {m: [] for m in metrics}
        done_seeds: list[int] = []
        params = mssd_terms = None
        for seed in settings.seeds:
            run_dir = run_dir_for(settings.out, name, seed)
            path = run_dir / EVAL_DIR / RESULTS_FILE
            record: dict[str, Any] = {"run_dir": str(run_dir.relative_to(settings.out)), "done": False}
            record.update({k: v for k, v in statuses.get((name, seed), {}).items() if k not in ("variant", "seed")})
            res = None
            if path.is_file():
                try:
                    res = read_json(path)
                except (OSError, ValueError):
                    res = None
            if res is not None and _results_match(res, settings):
                record["done"] = True
                done_seeds.append(seed)
                rates = [float(r) for r in res["rates"]]
                i0 = rates.index(0.0) if 0.0 in rates else None
                record["auilc"], record["rate0"] = {}, {}
                for m in metrics:
                    a = res.get("auilc", {}).get(m)
                    auilc[m].append(float("nan") if a is None else float(a))
                    r0 = float(res["metrics"][m]["mean"][i0]) if i0 is not None else float("nan")
                    rate0[m].append(r0)
                    curves[m].append([float(x) for x in res["metrics"][m]["mean"]])
                    record["auilc"][m], record["rate0"][m] = a, (None if i0 is None else r0)
                record["tau_rate0"] = None if i0 is None else float(res["tau"]["mean"][i0])
                record["eval_seconds_stored"] = res.get("seconds")
                record.update(_train_log_summary(run_dir, SELECTION_METRIC[settings.task]))
                if params is None:
                    params = _param_counts(run_dir)
                    try:
                        mssd_terms = read_json(run_dir / CONFIG_FILE).get("mssd_terms")
                    except (OSError, ValueError):
                        mssd_terms = None
            runs[str(seed)] = record
        summary = {
            "auilc": {m: _stats(auilc[m]) for m in metrics},
            "rate0": {m: _stats(rate0[m]) for m in metrics},
            "curve": {m: ({"mean": np.mean(curves[m], axis=0).tolist(), "std": np.std(curves[m], axis=0).tolist()}
                          if curves[m] else None) for m in metrics},
        }
        variants[name] = {
            "label": var.label, "description": var.description, "changes": var.changes,
            "config": json_normal(var.apply(settings.base).to_dict()),
            "seeds_done": done_seeds, "complete": len(done_seeds) == len(settings.seeds),
            "params_excluding_text_encoder": params, "mssd_terms": mssd_terms,
            "summary": summary, "runs": runs,
        }
    primary = metrics[0]
    full_mean = variants.get("full", {}).get("summary", {}).get("auilc", {}).get(primary, {}).get("mean")
    for v in variants.values():
        mean = v["summary"]["auilc"][primary]["mean"]
        v["delta_auilc_vs_full"] = (None if full_mean is None or mean is None else mean - full_mean)
    try:
        key = dataset_key(settings.data_path)
    except OSError:
        key = None
    return {
        "kind": "cider-mer ablation (Table V)",
        "command": settings.command,
        "task": settings.task,
        "metrics": list(metrics),
        "primary_metric": primary,
        "missing_mode": MISSING_MODE,
        "split": EVAL_SPLIT,
        "rates": [float(r) for r in settings.rates],
        "training_seeds": list(settings.seeds),
        "eval_seeds": list(settings.eval_seeds),
        "tau_selection": "validation split, same mode/rate/seed (variants without counterfactual text: tau 0)",
        "aggregation": "mean ± std (ddof=0) over training seeds of per-run values; each per-run value is the "
                       "mean over evaluation seeds; AUILC = trapezoid over the rates",
        "data": {"file": Path(settings.data_path).name, "sha256_16": key},
        "base_config": json_normal(settings.base.to_dict()),
        "variants": variants,
        "finished": all(v["complete"] for v in variants.values()),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }


# ----------------------------------------------------------------------------- writing


def _pm(stats: dict[str, Any], digits: int = 2) -> str:
    if stats.get("mean") is None:
        return "—"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def compute_seconds(agg: dict[str, Any]) -> tuple[float, float, int]:
    """(training seconds, evaluation seconds, finished runs) summed over the suite's finished runs."""
    train_s = eval_s = 0.0
    n = 0
    for v in agg["variants"].values():
        for run in v["runs"].values():
            if run.get("done"):
                n += 1
                train_s += float(run.get("train_seconds") or 0.0)
                eval_s += float(run.get("eval_seconds_stored") or 0.0)
    return train_s, eval_s, n


def results_section(agg: dict[str, Any]) -> str:
    """The Markdown report as a section of a larger document (its title one level down to ###)."""
    return markdown_report(agg).replace("# Ablation study", "### Ablation study", 1).replace("## Variants",
                                                                                            "#### Variants", 1)


def summary_table(agg: dict[str, Any]) -> str:
    """The Markdown table of the report: one row per variant (AUILC and rate-0 figures, Δ, params)."""
    metrics = agg["metrics"]
    primary = agg["primary_metric"]
    n_seeds = len(agg["training_seeds"])
    lab = lambda m: METRIC_LABELS.get(m, m)  # noqa: E731
    head = (["Variant", "Table V row"] + [f"AUILC {lab(m)}" for m in metrics] + [f"{lab(m)} r=0" for m in metrics]
            + [f"Δ {lab(primary)}", "Params*", "Seeds"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in agg["variants"].items():
        s = v["summary"]
        delta = v["delta_auilc_vs_full"]
        cells = [f"`{name}`", v["label"]]
        cells += [_pm(s["auilc"][m]) for m in metrics] + [_pm(s["rate0"][m]) for m in metrics]
        cells += ["—" if delta is None or name == "full" else f"{delta:+.2f}",
                  "—" if v["params_excluding_text_encoder"] is None else f"{v['params_excluding_text_encoder']:,}",
                  f"{len(v['seeds_done'])}/{n_seeds}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(agg: dict[str, Any]) -> str:
    primary = agg["primary_metric"]
    lab = lambda m: METRIC_LABELS.get(m, m)  # noqa: E731
    n_seeds = len(agg["training_seeds"])
    lines = [
        f"# Ablation study (Table V): {agg['task']} task, {agg['missing_mode']} on the {agg['split']} split",
        "",
        f"Data `{agg['data']['file']}` (content {agg['data']['sha256_16']}); training seeds "
        f"{', '.join(map(str, agg['training_seeds']))}; evaluation seeds {', '.join(map(str, agg['eval_seeds']))}; "
        f"missing rates {agg['rates'][0]:.1f}–{agg['rates'][-1]:.1f} ({len(agg['rates'])} points); "
        "tau chosen on the validation split.",
        "",
        f"Values: mean ± std over {n_seeds} training seed(s) (each the mean over the evaluation seeds), in %. "
        "AUILC is the trapezoid over the missing rates; \"r=0\" is complete data. "
        f"Δ = AUILC {lab(primary)} minus the `full` row.",
        "",
    ]
    lines += [summary_table(agg), "", "\\* trainable parameters outside the text encoder.", "", "## Variants", "",
              "| Variant | Changes to the base config | MSSD terms on | What it removes |", "|---|---|---|---|"]
    for name, v in agg["variants"].items():
        terms = "—" if v["mssd_terms"] is None else (", ".join(v["mssd_terms"]) or "none")
        lines.append(f"| `{name}` | {changes_text(v['changes'])} | {terms} | {v['description']} |")
    status = "all runs finished" if agg["finished"] else "INCOMPLETE: some runs are still missing (re-run to continue)"
    lines += ["", f"Status: {status}; updated {agg['updated']}.", ""]
    train_s, eval_s, n_runs = compute_seconds(agg)
    if n_runs:
        lines += [f"Compute: {train_s / 60:.1f} min of training and {eval_s / 60:.1f} min of evaluation, summed over "
                  f"the {n_runs} finished run(s) as each run logged them.", ""]
    if agg.get("command"):
        lines += ["Command:", "", "```", agg["command"], "```", ""]
    return "\n".join(lines)


def csv_report(agg: dict[str, Any]) -> str:
    metrics = agg["metrics"]
    cols = ["variant", "label", "changes", "seeds_done", "seeds_total", "params_excluding_text_encoder"]
    for kind in ("auilc", "rate0"):
        for m in metrics:
            cols += [f"{kind}_{m}_mean", f"{kind}_{m}_std"]
    cols.append(f"delta_auilc_{agg['primary_metric']}_vs_full")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    fmt = lambda x: "" if x is None else f"{x:.4f}"  # noqa: E731
    for name, v in agg["variants"].items():
        row = [name, v["label"], changes_text(v["changes"]) if v["changes"] else "", len(v["seeds_done"]), len(agg["training_seeds"]),
               "" if v["params_excluding_text_encoder"] is None else v["params_excluding_text_encoder"]]
        for kind in ("auilc", "rate0"):
            for m in metrics:
                st = v["summary"][kind][m]
                row += [fmt(st["mean"]), fmt(st["std"])]
        row.append(fmt(v["delta_auilc_vs_full"]))
        w.writerow(row)
    return buf.getvalue()


def plot_report(agg: dict[str, Any], path: str | Path) -> None:
    """One figure: the primary metric vs missing rate per variant, and its AUILC per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = agg["primary_metric"]
    label = METRIC_LABELS.get(primary, primary)
    rates = np.asarray(agg["rates"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110, gridspec_kw={"width_ratios": [1.2, 1]})
    names, means, stds = [], [], []
    for i, (name, v) in enumerate(agg["variants"].items()):
        curve = v["summary"]["curve"][primary]
        st = v["summary"]["auilc"][primary]
        names.append(name)
        means.append(np.nan if st["mean"] is None else st["mean"])
        stds.append(0.0 if st["std"] is None else st["std"])
        if curve is None:
            continue
        style = dict(lw=2.4, color="black") if name == "full" else dict(lw=1.4, color=plt.cm.tab10(i % 10))
        ax1.plot(rates, curve["mean"], marker="o", ms=3, label=name, **style)
    ax1.set_xlabel(f"missing rate ({agg['missing_mode']})")
    ax1.set_ylabel(f"{label} (%)")
    ax1.set_title(f"{label} vs missing rate (mean over training seeds)")
    ax1.grid(alpha=0.3)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=8, ncol=2)
    x = np.arange(len(names))
    colors = ["black" if n == "full" else plt.cm.tab10(i % 10) for i, n in enumerate(names)]
    ax2.bar(x, means, yerr=stds, color=colors, alpha=0.8, capsize=3)
    finite = [m for m in means if not np.isnan(m)]
    if finite:
        lo, hi = min(finite) - max(stds) - 2, max(finite) + max(stds) + 2
        ax2.set_ylim(max(0.0, lo), hi)
    ax2.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax2.set_ylabel(f"AUILC {label}")
    ax2.set_title(f"AUILC {label} ± std over {len(agg['training_seeds'])} training seed(s)")
    ax2.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Ablation, {agg['task']} task, {agg['split']} split")
    save_figure(fig, path)


def write_outputs(agg: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ablation.md, .csv, .json and .png into ``out`` (each atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {Path(name).suffix[1:]: out / name for name in OUTPUT_FILES}
    atomic_write_json(paths["json"], agg)
    atomic_write_text(paths["csv"], csv_report(agg))
    atomic_write_text(paths["md"], markdown_report(agg))
    plot_report(agg, paths["png"])
    return paths


# ----------------------------------------------------------------------------- the suite


def run_ablation(base: TrainConfig, data_path: str | Path, out: str | Path, variants: Optional[Sequence[str] | str] = None,
                 n_seeds: int = DEFAULT_TRAINING_SEEDS, eval_seeds: Sequence[int] = DEFAULT_EVAL_SEEDS,
                 rates: Optional[Sequence[float]] = None, progress: bool = True,
                 log: Callable[[str], None] = print, command: Optional[str] = None, encoder=None) -> dict[str, Any]:
    """Run (or continue) the ablation suite and return the aggregate written to ``out/ablation.json``.

    ``base``: the configuration every variant starts from (see :func:`default_base_config`).
    ``variants``: names or a comma list (default: all ten, in Table V order).
    ``n_seeds``: training seeds ``base.seed .. base.seed + n_seeds - 1``.
    ``encoder``: a text encoder to share; by default, with a frozen encoder, it is loaded once here.
    """
    from cider_mer.data.dataset import load_dataset

    names = parse_variants(variants)
    for name in names:  # fail before any training when a variant cannot apply to this base
        get_variant(name).apply(base)
    settings = SuiteSettings(base=base, data_path=Path(data_path), out=Path(out), variants=names,
                             seeds=training_seeds(base, n_seeds), eval_seeds=[int(s) for s in eval_seeds],
                             rates=[round(float(r), 4) for r in (rates if rates is not None else RATES_DEFAULT)],
                             command=command)
    if not settings.eval_seeds:
        raise ValueError("at least one evaluation seed is needed")
    data = load_dataset(settings.data_path)
    if encoder is None and base.freeze_text_encoder:
        from cider_mer.training.trainer import load_encoder

        encoder = load_encoder(base)
    elif encoder is not None and not base.freeze_text_encoder:
        raise ValueError("a shared text encoder only makes sense with a frozen encoder (freeze_text_encoder)")
    settings.out.mkdir(parents=True, exist_ok=True)
    total = len(names) * len(settings.seeds)
    log(f"ablation: {len(names)} variant(s) x {len(settings.seeds)} training seed(s) = {total} run(s) into {settings.out}")
    statuses: dict[tuple[str, int], dict[str, Any]] = {}
    t0 = time.time()
    agg: dict[str, Any] = {}
    for name in names:
        for seed in settings.seeds:
            statuses[(name, seed)] = run_one(settings, name, seed, data, encoder=encoder, progress=progress, log=log)
        agg = aggregate(settings, statuses)
        write_outputs(agg, settings.out)
    skipped = sum(1 for s in statuses.values() if s["status"] == "skipped")
    log(f"ablation finished in {time.time() - t0:.0f}s ({total - skipped} run(s) worked on, {skipped} skipped); "
        f"table in {settings.out / 'ablation.md'}")
    return agg
