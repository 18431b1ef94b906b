"""Writing a :class:`~cider_mer.benchmark.table.BenchmarkTable`: ``benchmark.md`` (Table IV and
Table VI layouts), ``benchmark.csv`` (long format), ``benchmark.json`` and ``benchmark.png``, each
atomically; and the Markdown section for a results document."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import numpy as np

from cider_mer.ablation.aggregate import Stats
from cider_mer.ablation.render import write_suite_outputs
from cider_mer.benchmark.table import BenchmarkTable
from cider_mer.evaluation.report import metric_label
from cider_mer.io_utils import save_figure
from cider_mer.metrics import LOWER_IS_BETTER

OUTPUT_FILES = ("benchmark.md", "benchmark.csv", "benchmark.json", "benchmark.png")
CSV_COLUMNS = ("row", "seed", "setting", "metric", "value", "training")
COMPLEXITY = "complexity"
METRICS_IN_WORDS = {
    "binary": "binary task: Acc2 and F1 are the Non0 figures, Acc3 the three-class accuracy (Acc7 needs "
              "`--task seven`)",
    "seven": "seven-class task: Acc7 and its macro F1 (Acc2/F1 need `--task binary`)",
    "regression": "regression task: MAE and Corr of the score, Acc2 (Non0) of its sign; no MACI is possible",
}


def _digits(metric: str) -> int:
    return 3 if metric in ("mae", "corr") else 2


def _pm(stats: Stats, digits: int = 2) -> str:
    return "—" if stats.mean is None else f"{stats.mean:.{digits}f} ± {stats.std:.{digits}f}"


def _best(table: BenchmarkTable, setting: str, metric: str) -> Optional[float]:
    means = [r.values[setting][metric].mean for r in table.rows.values()]
    means = [m for m in means if m is not None]
    if not means:
        return None
    return min(means) if metric in LOWER_IS_BETTER else max(means)


def results_table(table: BenchmarkTable) -> str:
    """Table IV: one row per model, columns setting x metric, best mean per column in bold."""
    head = ["Model"] + [f"{s.label} {metric_label(m)}" for s in table.settings for m in table.metrics] + ["Seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {(s.key, m): _best(table, s.key, m) for s in table.settings for m in table.metrics}
    for row in table.rows.values():
        cells = [row.label]
        for s in table.settings:
            for m in table.metrics:
                st = row.values[s.key][m]
                text = _pm(st, _digits(m))
                bold = st.mean is not None and len(table.rows) > 1 and st.mean == best[(s.key, m)]
                cells.append(f"**{text}**" if bold else text)
        cells.append(f"{len(row.seeds_done)}/{len(table.training_seeds)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def complexity_table(table: BenchmarkTable) -> str:
    """Table VI: parameters (and MACI's share), peak memory and training seconds per epoch."""
    head = ["Model", "Params*", "of which MACI", "Peak memory (GiB)†", "Training time (s/epoch)‡", "Epochs run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows.values():
        c = row.complexity
        epochs = [r.epochs_run for r in row.runs if r.done and r.epochs_run is not None]
        cells = [row.label, "—" if c.params_excluding_text_encoder is None else f"{c.params_excluding_text_encoder:,}",
                 "—" if c.params_maci is None else f"{c.params_maci:,}", _pm(c.peak_memory_gib, 3),
                 _pm(c.seconds_per_epoch, 2), ", ".join(map(str, epochs)) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _changed_settings(model: str, values: dict) -> str:
    """The model settings that differ from its registered defaults, as ``key=value`` (or "defaults")."""
    import dataclasses

    from cider_mer.models.registry import make_config

    defaults = dataclasses.asdict(make_config(model))
    changed = [f"{k}={v}" for k, v in values.items() if defaults.get(k) != v]
    return ", ".join(changed) or "registered defaults"


def _rows_table(table: BenchmarkTable) -> list[str]:
    lines = ["| Row | Model | MACI (MCM head + counterfactual text) | Objective | Model settings |",
             "|---|---|---|---|---|"]
    for row in table.rows.values():
        cfg = row.config
        objective = "MSSD" if cfg.get("mssd") else "its own"
        lines.append(f"| {row.label} | `{row.model}` | {'on' if row.maci else 'off'} | {objective} | "
                     f"{_changed_settings(row.model, cfg.get('model_config', {}))} |")
    return lines


def markdown_report(table: BenchmarkTable) -> str:
    """The whole ``benchmark.md``."""
    t = table
    iid, ood = t.data["iid"], t.data["ood"]
    base = t.base_config
    lines = [
        f"# Benchmark (Table IV): {t.task} task",
        "",
        f"Test files: IID `{iid['file']}` (content {iid['sha256_16']}), OOD `{ood['file']}` (content "
        f"{ood['sha256_16']}). Metrics: {METRICS_IN_WORDS[t.task]}. RMFM columns: AUILC over the missing rates "
        f"{t.rates[0]:.1f}–{t.rates[-1]:.1f} ({len(t.rates)} points) on the test split; the complete-data column "
        "(\"-\") is the rate-0 point of the OOD evaluation. tau is chosen on the validation split. Values: mean ± "
        f"std over {len(t.training_seeds)} training seed(s) ({', '.join(map(str, t.training_seeds))}), each the "
        f"mean over evaluation seeds {', '.join(map(str, t.eval_seeds))}; best mean per column in bold.",
        "",
        results_table(t),
        "",
        "Training data per column:",
        "",
        "| Setting | Test split | Trained on (train/valid) | Figure |",
        "|---|---|---|---|",
    ]
    for s in t.settings:
        test_file = t.data[s.test]["file"]
        figure = "AUILC" if s.figure == "auilc" else "rate 0 (complete data)"
        lines.append(f"| {s.label} | `{test_file}` test | {t.training_data[s.key]} | {figure} |")
    lines += [
        "", "## Complexity (Table VI)", "",
        f"Measured in the same runs on {t.hardware.device} ({', '.join(t.hardware.devices_measured) or t.hardware.device_name}).",
        "", complexity_table(t), "",
        "\\* parameters outside the text encoder (built from the run's config); \"of which MACI\" is the count with "
        "MACI minus the count with a plain linear head.",
        f"† {t.hardware.memory_label}; mean ± std over the row's training runs.",
        "‡ median training seconds per epoch (validation excluded) from each run's train_log.csv; mean ± std over "
        "the row's runs.",
        "", "## Rows", "", *_rows_table(t), "",
        f"Run-level base (every row): text encoder {base.get('text_encoder') or 'all-MiniLM-L6-v2 (default)'}, "
        f"{'frozen with cached features' if base.get('freeze_text_encoder') else 'fine-tuned'}, up to "
        f"{base.get('epochs')} epochs, patience {base.get('patience')}, each model's published learning rate, batch "
        "size and gradient accumulation, "
        f"length buckets {'on' if base.get('length_buckets') else 'off'}, precision {base.get('precision')}, "
        f"encoder precision {base.get('encoder_precision')}. Exact per-row settings: `benchmark.json` rows.*.config.",
    ]
    if t.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in t.notes]
    status = "all runs finished" if t.finished else "INCOMPLETE: some runs are still missing (re-run to continue)"
    lines += ["", f"Status: {status}; updated {t.updated}.", ""]
    if t.command:
        lines += ["Command:", "", "```", t.command, "```", ""]
    return "\n".join(lines)


def results_section(table: BenchmarkTable) -> str:
    """The report as a section of a larger document (headings two levels down)."""
    return (markdown_report(table).replace("# Benchmark (Table IV)", "### Benchmark (Table IV)", 1)
            .replace("## Complexity", "#### Complexity", 1).replace("## Rows", "#### Rows", 1))


def csv_report(table: BenchmarkTable) -> str:
    """``benchmark.csv``, long format: one line per (row, seed, setting, metric), plus the complexity
    figures (setting ``complexity``; parameter counts once per row with an empty seed)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for key, row in table.rows.items():
        for run in row.runs:
            if not run.done:
                continue
            for setting, values in run.values.items():
                for metric, value in values.items():
                    w.writerow([key, run.seed, setting, metric, "" if value is None else f"{value:.6g}", run.training])
            if run.seconds_per_epoch is not None:
                w.writerow([key, run.seed, COMPLEXITY, "train_seconds_per_epoch", f"{run.seconds_per_epoch:.6g}",
                            run.training])
            if run.peak_memory is not None:
                w.writerow([key, run.seed, COMPLEXITY, "peak_memory_gib", f"{run.peak_memory.gib:.6g}", run.training])
        c = row.complexity
        for metric, value in (("params_excluding_text_encoder", c.params_excluding_text_encoder),
                              ("params_maci", c.params_maci)):
            if value is not None:
                w.writerow([key, "", COMPLEXITY, metric, value, ""])
    return buf.getvalue()


def plot_report(table: BenchmarkTable, path: str | Path) -> None:
    """Grouped bars: the primary metric per model and setting (AUILC for RMFM, rate 0 for complete data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = table.primary_metric
    label = metric_label(primary)
    rows = list(table.rows.values())
    x = np.arange(len(rows))
    width = 0.8 / len(table.settings)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.4), dpi=110)
    for i, s in enumerate(table.settings):
        stats = [r.values[s.key][primary] for r in rows]
        means = [np.nan if st.mean is None else st.mean for st in stats]
        stds = [0.0 if st.std is None else st.std for st in stats]
        kind = "AUILC" if s.figure == "auilc" else "rate 0"
        ax.bar(x + (i - (len(table.settings) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=f"{s.label} ({kind})", color=plt.cm.tab10(i))
    finite = [r.values[s.key][primary].mean for r in rows for s in table.settings
              if r.values[s.key][primary].mean is not None]
    if finite and primary not in ("mae", "corr"):
        ax.set_ylim(max(0.0, min(finite) - 10), min(100.0, max(finite) + 5))
    ax.set_xticks(x, [r.label for r in rows], rotation=30, ha="right")
    ax.set_ylabel(label)
    ax.set_title(f"{label} per model and setting, mean ± std over {len(table.training_seeds)} training seed(s)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_outputs(table: BenchmarkTable, out: str | Path) -> dict[str, Path]:
    """Write benchmark.md, .csv, .json and .png into ``out`` (each atomically)."""
    return write_suite_outputs(table, out, OUTPUT_FILES, csv_report, markdown_report, plot_report)
