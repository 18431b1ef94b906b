"""Evaluation reports: ``results.json`` (schema: :mod:`cider_mer.evaluation.results`),
``results.csv``, ``results.md`` and a PNG plot; and the metric labels every report shares.

Results with named classes (``emotion``) add to ``results.md`` a per-class F1 table and the
confusion matrix at the complete-data point, and draw that matrix as ``confusion.png``.
The report's files are replaced as one set (:func:`write_report`): they are written into a hidden
sibling folder ``.NAME.new-*``, then two renames swap it in (``NAME`` -> ``.NAME.old-*``, the new
folder -> ``NAME``) and the old folder is removed. A reader therefore sees the old set or the new
one, never a mix; a writer killed between the two renames leaves no ``NAME`` for a moment, and
the next :func:`write_report` finishes that swap (or drops the leftovers of an unfinished write).
One writer at a time holds ``.NAME.lock`` beside the folder (:mod:`cider_mer.locks`).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

from cider_mer.evaluation.results import EvalResults
from cider_mer.io_utils import (
    OutputError,
    atomic_write_json,
    atomic_write_text,
    dir_mode,
    ensure_writable_dir,
    save_figure,
)
from cider_mer.locks import locked, sibling_lock_file

# The headline metrics of each task (plots, console tables, ablation and benchmark tables); LABELS is the
# one metric-label table of every report (per-run, ablation and benchmark).
PLOT_METRICS = {"binary": ("non0_acc2", "non0_f1"), "seven": ("acc7", "f1_7"), "regression": ("non0_acc2", "mae"),
                "sims_binary": ("acc2", "f1"), "sims_regression": ("acc2", "mae"), "emotion": ("acc", "f1_weighted")}
CONSOLE_METRICS = {"binary": ("non0_acc2", "non0_f1", "has0_acc2", "acc3"), "seven": ("acc7", "f1_7"),
                   "regression": ("non0_acc2", "has0_acc2", "acc7", "mae", "corr"),
                   "sims_binary": ("acc2", "f1"), "sims_regression": ("acc2", "acc3", "acc5", "f1", "mae", "corr"),
                   "emotion": ("acc", "f1_weighted", "f1_macro")}
LABELS = {"non0_acc2": "Acc2 (Non0)", "non0_f1": "F1 (Non0)", "has0_acc2": "Acc2 (Has0)", "has0_f1": "F1 (Has0)",
          "acc3": "Acc3", "f1_3": "F1 (3-class)", "acc5": "Acc5", "acc7": "Acc7", "f1_7": "F1 (7-class)",
          "mae": "MAE", "corr": "Corr", "acc2": "Acc2", "f1": "F1", "acc": "Acc", "f1_weighted": "F1 (weighted)",
          "f1_macro": "F1 (macro)"}


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


def _cell(mean: float, std: float) -> str:
    return "–" if mean != mean else f"{mean:.2f} ± {std:.2f}"  # NaN: the class is neither true nor predicted


def class_tables(results: EvalResults) -> str:
    """Markdown: per-class F1 per point (mean ± std over seeds) and the confusion matrix (rows: true
    class, columns: predicted class, counts averaged over seeds); empty without named classes."""
    if results.class_names is None:
        return ""
    names = results.class_names
    head = "rate" if results.numeric else "present modalities"
    lines = ["## Per-class F1", "", f"| {head} | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i in range(len(results.points)):
        cells = [_cell(results.per_class_f1[n].mean[i], results.per_class_f1[n].std[i]) for n in names]
        lines.append(f"| {_point_label(results, i)} | " + " | ".join(cells) + " |")
    point = results.confusion_point
    lines += ["", f"## Confusion matrix ({head} {point}; rows: true class, columns: predicted; mean over "
              f"{len(results.seeds)} seed(s))", "", "| true / predicted | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for name, row in zip(names, results.confusion):
        lines.append(f"| **{name}** | " + " | ".join(f"{v:g}" for v in row) + " |")
    return "\n".join(lines)


def plot_confusion(results: EvalResults, path: str | Path) -> Path:
    """The confusion matrix of ``results`` (named classes only) as a PNG: counts in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts, names = np.asarray(results.confusion, dtype=np.float64), results.class_names
    size = 1.2 + 0.7 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), dpi=120)
    image = ax.imshow(counts, cmap="Blues")
    top = counts.max() if counts.size else 0.0
    for (i, j), v in np.ndenumerate(counts):
        ax.text(j, i, f"{v:g}", ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    where = f"rate {results.confusion_point}" if results.numeric else f"present {results.confusion_point}"
    ax.set_title(f"{results.split} split, {results.missing_mode} {where}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)


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


REPORT_FILES = {"json": "results.json", "csv": "results.csv", "md": "results.md", "png": "results.png"}
CONFUSION_FILE = "confusion.png"  # only for results with named classes


def _finish_or_drop_swap(out: Path) -> None:
    """Clean what a killed :func:`write_report` left beside ``out`` (the caller holds the lock, so
    no other writer is at work): a complete new set whose swap was cut short is moved in."""
    new = sorted(out.parent.glob(f".{out.name}.new-*"))
    old = sorted(out.parent.glob(f".{out.name}.old-*"))
    if not out.exists() and old:  # cut between the two renames: the new set is complete, else the old one back
        os.rename(new.pop() if new else old.pop(), out)
    for leftover in new + old:
        shutil.rmtree(leftover, ignore_errors=True)


def check_report_dir(out_dir: str | Path) -> Path:
    """Before any work: ``out_dir`` can be written and holds nothing but an earlier report (the
    whole folder is replaced, so anything else would be lost); returns it."""
    out = ensure_writable_dir(out_dir, "report folder")
    if out.is_dir():
        foreign = sorted(n for n in os.listdir(out) if not n.startswith(".") and n not in (*REPORT_FILES.values(), CONFUSION_FILE))
        if foreign:
            raise OutputError(f"report folder {out}: holds other files than a report ({', '.join(foreign[:5])}); "
                              "choose an empty folder or one with an earlier report")
    return out


def write_report(results: EvalResults, out_dir: str | Path) -> dict[str, Path]:
    """Write the four report files (and ``confusion.png`` for named classes) into ``out_dir`` as one
    set (see the module notes); returns their paths.

    ``out_dir`` may hold only an earlier report (anything else is refused, so nothing is lost).
    """
    out = check_report_dir(out_dir)
    with locked(sibling_lock_file(out), f"report folder {out}"):
        _finish_or_drop_swap(out)
        check_report_dir(out)
        new = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
        try:
            os.chmod(new, dir_mode())  # mkdtemp makes 0700
            names = _write_files(results, {k: new / name for k, name in REPORT_FILES.items()})
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        old = new.with_name(new.name.replace(".new-", ".old-", 1))
        if out.exists():
            os.rename(out, old)
        os.rename(new, out)
        shutil.rmtree(old, ignore_errors=True)
    return {k: out / name for k, name in names.items()}


def _write_files(results: EvalResults, paths: dict[str, Path]) -> dict[str, str]:
    """Write the report into ``paths`` (one folder); returns the written file names by kind."""
    atomic_write_json(paths["json"], results.to_dict())
    atomic_write_text(paths["csv"], csv_text(results))
    title = (f"# {results.config.get('train', {}).get('model', 'model')} — {results.task} task, "
             f"{results.missing_mode} on the {results.split} split\n\n"
             f"Seeds {results.seeds}; tau selection: {results.tau_selection}.\n\n"
             + (f"{auilc_note(results)}\n\n" if results.per_modality else ""))
    classes = class_tables(results)
    atomic_write_text(paths["md"], title + markdown_table(results) + "\n" + (f"\n{classes}\n" if classes else ""))
    plot_results(results, paths["png"])
    names = {k: p.name for k, p in paths.items()}
    if results.class_names is not None:
        names["confusion"] = plot_confusion(results, paths["json"].parent / CONFUSION_FILE).name
    return names
