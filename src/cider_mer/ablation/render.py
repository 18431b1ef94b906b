"""Writing a suite's :class:`~cider_mer.ablation.aggregate.AblationTable`: ``ablation.md``, ``.csv``,
``.json`` and ``.png``, and the Markdown table for the console and results documents. Metric
names come from :func:`cider_mer.evaluation.report.metric_label`, like every other report."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cider_mer.ablation.aggregate import REFERENCE, AblationTable, Stats
from cider_mer.ablation.variants import changes_text
from cider_mer.evaluation.report import metric_label
from cider_mer.io_utils import atomic_write_json, atomic_write_text, save_figure

OUTPUT_FILES = ("ablation.md", "ablation.csv", "ablation.json", "ablation.png")


def _pm(stats: Stats, digits: int = 2) -> str:
    if stats.mean is None:
        return "—"
    return f"{stats.mean:.{digits}f} ± {stats.std:.{digits}f}"


def _num(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.4f}"


def summary_table(table: AblationTable) -> str:
    """The Markdown table of the report: one row per variant (AUILC and rate-0 figures, Δ, params)."""
    metrics = table.metrics
    head = (["Variant", "Table V row"] + [f"AUILC {metric_label(m)}" for m in metrics]
            + [f"{metric_label(m)} r=0" for m in metrics]
            + [f"Δ {metric_label(table.primary_metric)}", "Params*", "Seeds"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in table.variants.items():
        delta = v.delta_auilc_vs_full
        params = v.params_excluding_text_encoder
        cells = [f"`{name}`", v.label]
        cells += [_pm(v.auilc[m]) for m in metrics] + [_pm(v.rate0[m]) for m in metrics]
        cells += ["—" if delta is None or name == REFERENCE else f"{delta:+.2f}",
                  "—" if params is None else f"{params:,}", f"{len(v.seeds_done)}/{len(table.training_seeds)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(table: AblationTable) -> str:
    """The whole ``ablation.md``: settings, the summary table, the variants, status, compute and command."""
    t = table
    lines = [
        f"# Ablation study (Table V): {t.task} task, {t.missing_mode} on the {t.split} split",
        "",
        f"Data `{t.data_file}` (content {t.data_sha256_16}); training seeds "
        f"{', '.join(map(str, t.training_seeds))}; evaluation seeds {', '.join(map(str, t.eval_seeds))}; "
        f"missing rates {t.rates[0]:.1f}–{t.rates[-1]:.1f} ({len(t.rates)} points); "
        "tau chosen on the validation split.",
        "",
        f"Values: mean ± std over {len(t.training_seeds)} training seed(s) (each the mean over the evaluation seeds), "
        "in %. AUILC is the trapezoid over the missing rates; \"r=0\" is complete data. "
        f"Δ = AUILC {metric_label(t.primary_metric)} minus the `{REFERENCE}` row.",
        "",
        summary_table(t), "", "\\* trainable parameters outside the text encoder.", "", "## Variants", "",
        "| Variant | Changes to the base config | MSSD terms on | What it removes |", "|---|---|---|---|",
    ]
    for name, v in t.variants.items():
        terms = "—" if v.mssd_terms is None else (", ".join(v.mssd_terms) or "none")
        lines.append(f"| `{name}` | {changes_text(v.changes)} | {terms} | {v.description} |")
    status = "all runs finished" if t.finished else "INCOMPLETE: some runs are still missing (re-run to continue)"
    lines += ["", f"Status: {status}; updated {t.updated}.", ""]
    train_s, eval_s, n_runs = t.compute_seconds()
    if n_runs:
        lines += [f"Compute: {train_s / 60:.1f} min of training and {eval_s / 60:.1f} min of evaluation, summed over "
                  f"the {n_runs} finished run(s) as each run logged them.", ""]
    if t.command:
        lines += ["Command:", "", "```", t.command, "```", ""]
    return "\n".join(lines)


def results_section(table: AblationTable) -> str:
    """The Markdown report as a section of a larger document (its title one level down to ###)."""
    return (markdown_report(table).replace("# Ablation study", "### Ablation study", 1)
            .replace("## Variants", "#### Variants", 1))


def csv_report(table: AblationTable) -> str:
    """``ablation.csv``: one row per variant, mean and std of every AUILC and rate-0 figure."""
    metrics = table.metrics
    cols = ["variant", "label", "changes", "seeds_done", "seeds_total", "params_excluding_text_encoder"]
    cols += [f"{kind}_{m}_{x}" for kind in ("auilc", "rate0") for m in metrics for x in ("mean", "std")]
    cols.append(f"delta_auilc_{table.primary_metric}_vs_full")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for name, v in table.variants.items():
        params = v.params_excluding_text_encoder
        row = [name, v.label, changes_text(v.changes) if v.changes else "", len(v.seeds_done),
               len(table.training_seeds), "" if params is None else params]
        for stats in (v.auilc, v.rate0):
            for m in metrics:
                row += [_num(stats[m].mean), _num(stats[m].std)]
        row.append(_num(v.delta_auilc_vs_full))
        w.writerow(row)
    return buf.getvalue()


def plot_report(table: AblationTable, path: str | Path) -> None:
    """One figure: the primary metric vs missing rate per variant, and its AUILC per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = table.primary_metric
    label = metric_label(primary)
    rates = np.asarray(table.rates)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110, gridspec_kw={"width_ratios": [1.2, 1]})
    names, means, stds = [], [], []
    for i, (name, v) in enumerate(table.variants.items()):
        st, curve = v.auilc[primary], v.curve[primary]
        names.append(name)
        means.append(np.nan if st.mean is None else st.mean)
        stds.append(0.0 if st.std is None else st.std)
        if curve is None:
            continue
        style = dict(lw=2.4, color="black") if name == REFERENCE else dict(lw=1.4, color=plt.cm.tab10(i % 10))
        ax1.plot(rates, curve.mean, marker="o", ms=3, label=name, **style)
    ax1.set_xlabel(f"missing rate ({table.missing_mode})")
    ax1.set_ylabel(f"{label} (%)")
    ax1.set_title(f"{label} vs missing rate (mean over training seeds)")
    ax1.grid(alpha=0.3)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=8, ncol=2)
    x = np.arange(len(names))
    colors = ["black" if n == REFERENCE else plt.cm.tab10(i % 10) for i, n in enumerate(names)]
    ax2.bar(x, means, yerr=stds, color=colors, alpha=0.8, capsize=3)
    finite = [m for m in means if not np.isnan(m)]
    if finite:
        ax2.set_ylim(max(0.0, min(finite) - max(stds) - 2), max(finite) + max(stds) + 2)
    ax2.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax2.set_ylabel(f"AUILC {label}")
    ax2.set_title(f"AUILC {label} ± std over {len(table.training_seeds)} training seed(s)")
    ax2.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Ablation, {table.task} task, {table.split} split")
    save_figure(fig, path)


def write_suite_outputs(table, out: str | Path, names: tuple[str, ...], csv_text: Callable[[Any], str],
                        markdown_text: Callable[[Any], str], plot: Callable[[Any, Path], None]) -> dict[str, Path]:
    """Write a suite table (ablation or benchmark) as NAME.md, .csv, .json (``table.to_dict()``) and
    .png into ``out``, each atomically; returns the paths by suffix."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {Path(name).suffix[1:]: out / name for name in names}
    atomic_write_json(paths["json"], table.to_dict())
    atomic_write_text(paths["csv"], csv_text(table))
    atomic_write_text(paths["md"], markdown_text(table))
    plot(table, paths["png"])
    return paths


def write_outputs(table: AblationTable, out: str | Path) -> dict[str, Path]:
    """Write ablation.md, .csv, .json and .png into ``out`` (each atomically)."""
    return write_suite_outputs(table, out, OUTPUT_FILES, csv_report, markdown_report, plot_report)
