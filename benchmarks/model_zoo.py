"""The model zoo on complete data: every registered model, binary and regression, over training seeds.

Not a test: a benchmark that writes a table. Each model is trained the way ``cider benchmark``
trains a row (and ``cider train --model M`` with the same settings): its own objective and
registered defaults, the toolkit's training missingness, CIDer with MSSD and MACI for the binary
task (no MACI for regression); the run-level settings are the CPU preset (frozen all-MiniLM-L6-v2
with cached features, length buckets, patience max(3, epochs // 3) unless ``--patience``), each
model at its published learning rate. Checkpoints are selected on
validation only; the test split is read once per run, by the evaluation at missing rates 0 and 1.

Per (dataset, task) the runs go through the suites' runner (:func:`cider_mer.ablation.run.run_one`:
a finished run is skipped, an interrupted one continued) into
``OUT/<dataset>/<task>/runs/<model>/seed<k>/``. The loop is seed-major (every model at the first
seed, then the second ...), so an interrupted invocation leaves a table with whole seeds.

Figures (test split, complete data): binary Non0 Acc2 / F1 and Has0 Acc2; regression MAE, Corr,
Non0 Acc2 and Acc7; mean ± std over the finished training seeds; the median training seconds per
epoch, the summed training time, the epochs run and the parameters outside the text encoder. The
majority-class Non0 Acc2 of the test split is printed beside them as a reference (a model at that
figure has learnt nothing).

    python benchmarks/model_zoo.py --dataset mosi --csv ../shared/data/mosi/label.csv \\
        --out runs/zoo --epochs 10 --seeds 3 --results docs/results.md
    python benchmarks/model_zoo.py --dataset synth --out runs/zoo --epochs 20 --device cuda --results docs/results.md
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cider_mer.ablation.run import NamedConfig, SuiteGrid
from cider_mer.config import TrainConfig
from cider_mer.io_utils import atomic_write_json, atomic_write_text, update_marked_section, versions

TASKS = ("binary", "regression")
FIGURES = {"binary": (("non0_acc2", "Non0 Acc2"), ("non0_f1", "Non0 F1"), ("has0_acc2", "Has0 Acc2")),
           "regression": (("mae", "MAE"), ("corr", "Corr"), ("non0_acc2", "Non0 Acc2"), ("acc7", "Acc7"))}
RATES = [0.0, 1.0]
EVAL_SEEDS = [0]


@dataclass
class ZooGrid(SuiteGrid):
    """One (dataset, task) grid for the suites' runner: base settings, folder and protocol."""

    base: TrainConfig
    out: Path
    eval_seeds: list[int] = field(default_factory=lambda: list(EVAL_SEEDS))
    rates: list[float] = field(default_factory=lambda: list(RATES))


def prepare(args) -> Path:
    """The dataset file: the real MOSI transcripts imported (text only) or the synthetic default."""
    if args.data is not None:
        return args.data
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.dataset}.pkl"
    if path.is_file():
        return path
    if args.dataset == "mosi":
        from cider_mer.data.import_csv import import_csv

        if not args.csv.is_file():
            sys.exit(f"error: {args.csv}: no such file (the real MOSI transcripts, label.csv)")
        import_csv(args.csv, path)
    else:
        from cider_mer.data.synth import write_synthetic

        write_synthetic(path)
    return path


def majority_non0_acc2(data) -> float:
    """Non0 Acc2 of always answering the larger sign on the test split (a reference, not a result)."""
    y = np.asarray(data.splits["test"].regression_labels, dtype=np.float64)
    y = y[y != 0]
    return float(100 * max((y > 0).mean(), (y < 0).mean()))


def run_name(row) -> str:
    return row.key.replace("+", "_")


def run_figures(grid, row, seed: int) -> dict[str, Any]:
    from cider_mer.ablation.aggregate import TrainLog
    from cider_mer.ablation.run import run_dir_for
    from cider_mer.benchmark.table import run_epoch_figures, run_parameter_counts

    run_dir = run_dir_for(grid.out, run_name(row), seed)
    results = grid.stored_results(run_name(row), seed)
    epochs, per_epoch = run_epoch_figures(run_dir)
    log = TrainLog.read(run_dir, "selection")
    params, _ = run_parameter_counts(run_dir, row.maci)
    rec = {m: results.at_rate(m, 0.0) for m, _ in FIGURES[grid.task]}
    rec.update(epochs_run=epochs, seconds_per_epoch=per_epoch, train_seconds=log.train_seconds if log else None,
               best_epoch=log.best_epoch if log else None, params=params)
    return rec


def fmt(values: list, digits: int = 2) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return "—" if not len(v) else f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def render(summary: dict, args, minutes: float) -> str:
    lines = [f"### Model zoo on {summary['dataset_label']}: complete-data test figures", ""]
    if args.note:
        lines += [f"**{args.note}**", ""]
    lines += [f"Command: `python benchmarks/model_zoo.py {' '.join(args.argv)}` ({minutes:.0f} min of wall "
              f"time for this invocation; finished runs are reused). Device {summary['device']}. Training seeds "
              f"{summary['seeds']} (mean ± std, ddof 0, over the seeds finished per model); up to {args.epochs} "
              f"epochs, patience {summary['patience']}, the CPU preset (frozen all-MiniLM-L6-v2, cached features, "
              "length buckets), each model at its published learning rate, batch size and gradient accumulation; "
              "checkpoint chosen on validation; test at missing rate 0. "
              f"Majority-class Non0 Acc2 on this test split: {summary['majority']:.2f}.", ""]
    for task in args.tasks:
        figs = FIGURES[task]
        head = ["Model", *[lab for _, lab in figs], "Seeds", "Epochs run (best)", "s/epoch", "Training (s)", "Params*"]
        lines += [f"**{task}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, rec in summary["tasks"].get(task, {}).items():
            runs = rec["runs"]
            cells = [rec["label"]] + [fmt([r[m] for r in runs]) for m, _ in figs]
            cells += [str(len(runs)), ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in runs),
                      fmt([r["seconds_per_epoch"] for r in runs], 1), fmt([r["train_seconds"] for r in runs], 0),
                      f"{runs[0]['params']:,}" if runs and runs[0]["params"] else "—"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["\\* parameters outside the text encoder, for this data's shapes (MACI's MCM head included for "
              "CIDer on the binary task)."]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("mosi", "synth"), default="mosi")
    ap.add_argument("--csv", type=Path, default=Path("../shared/data/mosi/label.csv"))
    ap.add_argument("--data", type=Path, default=None, help="an existing dataset file instead of --dataset's")
    ap.add_argument("--out", type=Path, default=Path("runs/zoo"))
    ap.add_argument("--models", default="cider,dlf,mplmm,lnln,emt_dlfr,mult")
    ap.add_argument("--tasks", default="binary,regression")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds 1111, 1112, ...")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=None,
                    help="early-stopping patience (default: the CPU preset's max(3, epochs // 3)); a larger one "
                         "continues runs that stopped early")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=None, help="Markdown file to update (e.g. docs/results.md)")
    ap.add_argument("--note", default="", help="a line shown above the tables")
    ap.add_argument("--table-only", action="store_true",
                    help="train nothing: write the tables from the runs already evaluated")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.tasks = [t for t in args.tasks.split(",") if t]
    if set(args.tasks) - set(TASKS):
        sys.exit(f"error: --tasks: expected some of {TASKS}, got {args.tasks}")
    name = args.data.stem if args.data is not None else args.dataset
    args.out = args.out / name

    from cider_mer.ablation.run import run_one, shared_encoder, training_seeds
    from cider_mer.benchmark.plan import build_rows
    from cider_mer.benchmark.suite import default_base_config
    from cider_mer.data.dataset import load_dataset
    from cider_mer.runs import resolve_device

    t0 = time.time()
    data = load_dataset(prepare(args))
    grids, rows = {}, {}
    for task in args.tasks:
        base = default_base_config(task, epochs=args.epochs).with_overrides(device=args.device, patience=args.patience)
        grids[task] = ZooGrid(base, args.out / task)
        rows[task] = build_rows(base, args.models)
    seeds = training_seeds(grids[args.tasks[0]].base, args.seeds)
    encoder = shared_encoder(grids[args.tasks[0]].base)
    labels = {"mosi": "the real MOSI transcripts (text only)", "synth": "the synthetic default (unaligned, MOSI shapes)"}
    summary = {"dataset_label": f"`{args.data.name}`" if args.data is not None else labels[args.dataset],
               "device": str(resolve_device(args.device)), "seeds": seeds,
               "patience": grids[args.tasks[0]].base.patience, "majority": majority_non0_acc2(data),
               "tasks": {}}

    def write() -> str:
        section = render(summary, args, (time.time() - t0) / 60)
        atomic_write_text(args.out / "zoo.md", section + "\n")
        atomic_write_json(args.out / "zoo.json", {"summary": summary, "argv": args.argv, "versions": versions(),
                                                  "base_configs": {t: g.base.to_dict() for t, g in grids.items()}})
        if args.results:
            update_marked_section(args.results, f"zoo-{name}", section)
        return section

    for seed in seeds:
        for task in args.tasks:
            for row in rows[task]:
                rec = summary["tasks"].setdefault(task, {}).setdefault(row.key, {"label": row.label, "runs": []})
                if args.table_only and grids[task].stored_results(run_name(row), seed) is None:
                    continue
                entry = NamedConfig(run_name(row), row.config, row.label)
                status = run_one(grids[task], entry, seed, data, encoder=encoder, progress=False)
                rec["runs"].append({"seed": seed, **run_figures(grids[task], row, seed)})
                first = FIGURES[task][0][0]
                print(f"{task} {row.label} seed {seed} ({status.status}, {status.seconds:.0f}s): "
                      f"{first} {rec['runs'][-1][first]:.2f}", flush=True)
            write()
    print(write())


if __name__ == "__main__":
    main()
