"""Evaluation reports: ``results.json`` (schema: :mod:`cider_mer.evaluation.results`),
``results.csv``, ``results.md`` and a PNG plot; and the metric labels every report shares.
"""

from __future__ import annotations

import io
from pathlib import Path

from cider_mer.evaluation.results import EvalResults
from cider_mer.io_utils import atomic_write_json, atomic_write_text, save_figure

# The headline metrics of each task (plots, console tables, ablation and benchmark tables); LABELS is the
# one metric-label table of every report (per-run, ablation and benchmark).
PLOT_METRICS = {"binary": ("non0_acc2", "non0_f1"), "seven": ("acc7", "f1_7"), "regression": ("non0_acc2", "mae")}
CONSOLE_METRICS = {"binary": ("non0_acc2", "non0_f1", "has0_acc2", "acc3"), "seven": ("acc7", "f1_7"),
                   "regression": ("non0_acc2", "has0_acc2", "acc7", "mae", "corr")}
LABELS = {"non0_acc2": "Acc2 (Non0)", "non0_f1": "F1 (Non0)", "has0_acc2": "Acc2 (Has0)", "has0_f1": "F1 (Has0)",
          "acc3": "Acc3", "f1_3": "F1 (3-class)", "acc5": "Acc5", "acc7": "Acc7", "f1_7": "F1 (7-class)",
          "mae": "MAE", "corr": "Corr"}


def metric_label(name: str) -> str:
    """The display name of a metric in every report (the metric's key when it has none)."""
    return LABELS.get(name, name)


def _point_label(results: EvalResults, i: int) -> str:
    p = results.points[i]
    return f"{float(p):.1f}" if results.numeric and not results.per_modality else p


def auilc_note(results: EvalResults) -> str:
    """How AUILC was taken for per-modality points (empty for other results)."""
    if not results.per_modality:
        return ""
    if results.auilc:
        return "AUILC over the mean missing rate (the per-modality points lie on one axis: nested masks)."
    return ("AUILC not reported: per-modality points define an AUILC only when every modality's rate is "
            "non-decreasing from point to point (then it is taken over the mean rate).")


def markdown_table(results: EvalResults, metrics: tuple[str, ...] | None = None) -> str:
    """Per-rate table (mean ± std over seeds), an AUILC row and the tau used."""
    names = list(metrics or results.metrics.keys())
    head = ("rates text/audio/vision" if results.per_modality else "rate") if results.numeric else "present modalities"
    lines = [f"| {head} | " + " | ".join(LABELS.get(n, n) for n in names) + " | tau |",
             "|---|" + "---|" * (len(names) + 1)]
    for i in range(len(results.points)):
        cells = [f"{results.metrics[n].mean[i]:.2f} ± {results.metrics[n].std[i]:.2f}" for n in names]
        t = "oracle" if results.is_oracle else f"{results.tau_mean[i]:.2f}"
        lines.append(f"| {_point_label(results, i)} | " + " | ".join(cells) + f" | {t} |")
    if results.auilc:
        cells = [f"**{results.auilc[n]:.2f} ± {results.auilc_std[n]:.2f}**" for n in names]
        lines.append("| **AUILC** | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def csv_text(results: EvalResults) -> str:
    names = list(results.metrics.keys())
    buf = io.StringIO()
    buf.write("point," + ",".join(f"{n}_mean,{n}_std" for n in names) + ",tau\n")
    for i, p in enumerate(results.points):
        vals = ",".join(f"{results.metrics[n].mean[i]:.4f},{results.metrics[n].std[i]:.4f}" for n in names)
        t = "" if results.is_oracle else f"{results.tau_mean[i]:.3f}"
        buf.write(f"{p},{vals},{t}\n")
    if results.auilc:
        buf.write("AUILC," + ",".join(f"{results.auilc[n]:.4f},{results.auilc_std[n]:.4f}" for n in names) + ",\n")
    return buf.getvalue()


def plot_results(results: EvalResults, path: str | Path, title: str = "") -> None:
    """Metric vs missing rate (bars for SMM), mean with a ±std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = PLOT_METRICS[results.task]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if results.numeric and not results.per_modality:
        x = np.asarray(results.rates)
        for n in names:
            m, s = np.asarray(results.metrics[n].mean), np.asarray(results.metrics[n].std)
            label = LABELS[n] + (f" (AUILC {results.auilc[n]:.1f})" if n in results.auilc else "")
            ax.plot(x, m, marker="o", label=label)
            ax.fill_between(x, m - s, m + s, alpha=0.2)
        ax.set_xlabel(f"missing rate ({results.missing_mode})")
    else:
        x = np.arange(len(results.points))
        width = 0.8 / len(names)
        for j, n in enumerate(names):
            ax.bar(x + j * width, results.metrics[n].mean, width, yerr=results.metrics[n].std, label=LABELS[n])
        ax.set_xticks(x + width * (len(names) - 1) / 2, results.points)
        ax.set_xlabel(f"missing rates text/audio/vision ({results.missing_mode})" if results.per_modality
                      else "present modalities (SMM)")
    ax.set_ylabel("% (MAE: score units)" if "mae" in names else "%")
    ax.set_title(title or f"{results.task} task, {results.split} split, {len(results.seeds)} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def write_report(results: EvalResults, out_dir: str | Path) -> dict[str, Path]:
    """Write the four report files into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md",
             "png": out / "results.png"}
    atomic_write_json(paths["json"], results.to_dict())
    atomic_write_text(paths["csv"], csv_text(results))
    title = (f"# {results.config.get('train', {}).get('model', 'model')} — {results.task} task, "
             f"{results.missing_mode} on the {results.split} split\n\n"
             f"Seeds {results.seeds}; tau selection: {results.tau_selection}.\n\n"
             + (f"{auilc_note(results)}\n\n" if results.per_modality else ""))
    atomic_write_text(paths["md"], title + markdown_table(results) + "\n")
    plot_results(results, paths["png"])
    return paths
