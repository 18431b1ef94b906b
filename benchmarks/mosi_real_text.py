"""Real CMU-MOSI transcripts: IID and OOD splits, CIDer with and without MACI, RMFM rates 0-1.

Not a test: a benchmark that writes tables. Steps (each resumable: finished work is skipped):

1. ``cider data import-csv`` of ``label.csv`` (audio and video absent: zero-length modalities);
2. ``cider data ood-split`` per task (seed 0) with the bag-of-words shift report;
3. for IID and OOD, for each task, CIDer ``full`` and ``no_maci`` (3 training seeds) trained and
   evaluated under RMFM at rates 0.0 .. 1.0 through the ablation suite runner (tau chosen on
   validation);
4. one Markdown table (Acc2 / F1 / Acc7 at rate 0 and their AUILC, mean ± std over training
   seeds) written to ``OUT/mosi_results.md`` and, with ``--results``, between the markers
   ``<!-- mosi:begin -->`` / ``<!-- mosi:end -->`` of that file.

CPU default: the frozen all-MiniLM-L6-v2 with the demo's model settings. ``--finetune`` trains the
encoder too (use a GPU).

    python benchmarks/mosi_real_text.py --csv ../shared/data/mosi/label.csv --out runs/bench_mosi \
        --results docs/results.md
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from cider_mer.io_utils import atomic_write_text, read_json, update_marked_section

SETTINGS = ("iid", "ood")
VARIANTS = ("full", "no_maci")
LABEL = {"full": "CIDer with MACI", "no_maci": "CIDer without MACI"}


def prepare_data(csv: Path, out: Path, tasks: list[str], log) -> dict[tuple[str, str], Path]:
    from cider_mer.data.import_csv import import_csv
    from cider_mer.data.ood_split import write_ood_split

    out.mkdir(parents=True, exist_ok=True)
    iid = out / "mosi_iid.pkl"
    if not iid.is_file():
        t = time.time()
        import_csv(csv, iid)
        log(f"imported {csv} -> {iid} in {time.time() - t:.1f}s")
    files = {}
    for task in tasks:
        files[("iid", task)] = iid
        ood = out / f"mosi_ood_{task}.pkl"
        if not ood.is_file():
            manifest = write_ood_split(iid, ood, task=task, seed=0, report=True)
            sh = manifest["shift"]
            log(f"OOD split ({task}): bag-of-words IID {sh['bow_acc_iid_test']:.2f} vs OOD {sh['bow_acc_ood_test']:.2f}")
        files[("ood", task)] = ood
    return files


def shift_line(out: Path, task: str) -> str:
    sh = read_json(out / f"mosi_ood_{task}.pkl.manifest.json").get("shift", {})
    return (f"bag-of-words on the {task} OOD split: IID re-split test {sh.get('bow_acc_iid_test', float('nan')):.2f}, "
            f"OOD test {sh.get('bow_acc_ood_test', float('nan')):.2f}")


def table(aggs: dict[tuple[str, str], dict], tasks: list[str]) -> str:
    """Rows: setting x MACI; columns: Acc2 / F1 (binary) and Acc7 (seven) at rate 0 and AUILC."""
    cols = []
    if "binary" in tasks:
        cols += [("binary", "non0_acc2", "Acc2"), ("binary", "non0_f1", "F1")]
    if "seven" in tasks:
        cols += [("seven", "acc7", "Acc7")]
    head = ["data", "model"] + [f"{lab} (r=0)" for _, _, lab in cols] + [f"AUILC {lab}" for _, _, lab in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(setting, task, metric, kind, variant):
        agg = aggs.get((setting, task))
        if agg is None:
            return "—"
        s = agg["variants"][variant]["summary"][kind][metric]
        return "—" if s["mean"] is None else f"{s['mean']:.2f} ± {s['std']:.2f}"

    for setting in SETTINGS:
        for variant in VARIANTS:
            cells = [cell(setting, t, m, "rate0", variant) for t, m, _ in cols]
            cells += [cell(setting, t, m, "auilc", variant) for t, m, _ in cols]
            lines.append(f"| {setting.upper()} | {LABEL[variant]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_lines(aggs: dict[tuple[str, str], dict]) -> list[str]:
    lines = []
    for (setting, task), agg in sorted(aggs.items()):
        metric = agg["primary_metric"]
        for variant in VARIANTS:
            v = agg["variants"][variant]
            runs = [v["runs"][str(s)] for s in agg["training_seeds"]]
            vals = [run.get("rate0", {}).get(metric) for run in runs]
            taus = [run["tau_rate0"] for run in runs if run.get("tau_rate0") is not None]
            shown = ", ".join("—" if x is None else f"{x:.2f}" for x in vals)
            tau_txt = ", ".join(f"{t:.2f}" for t in taus)
            lines.append(f"- {setting.upper()} {task} {LABEL[variant]}: rate-0 {metric} per seed {shown}; "
                         f"tau at rate 0 (mean over mask seeds) {tau_txt or '—'}")
    return lines


def compute_minutes(agg: dict) -> str:
    from cider_mer.ablation.suite import compute_seconds

    train_s, eval_s, _ = compute_seconds(agg)
    return f"{train_s / 60:.1f} + {eval_s / 60:.1f} min"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=Path("../shared/data/mosi/label.csv"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_mosi"))
    ap.add_argument("--tasks", default="binary,seven")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds")
    ap.add_argument("--eval-seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--finetune", action="store_true", help="fine-tune the encoder (GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=None, help="Markdown file to update (e.g. docs/results.md)")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        sys.exit(f"error: {args.csv}: no such file (the real MOSI transcripts)")

    from cider_mer.ablation.suite import run_ablation
    from cider_mer.cli.options import parse_seeds
    from cider_mer.training.presets import cpu_friendly_config

    tasks = [t for t in args.tasks.split(",") if t]
    t0 = time.time()
    files = prepare_data(args.csv, args.out, tasks, print)
    aggs = {}
    for setting in SETTINGS:
        for task in tasks:
            base = cpu_friendly_config(task, epochs=args.epochs, device=args.device)
            if args.finetune:
                base = dataclasses.replace(base, freeze_text_encoder=False, length_buckets=False,
                                           model_config={"layers": 3, "heads": 8})
            out = args.out / f"{setting}_{task}"
            agg = run_ablation(base, files[(setting, task)], out, variants=list(VARIANTS), n_seeds=args.seeds,
                               eval_seeds=parse_seeds(args.eval_seeds), progress=False,
                               command="python benchmarks/mosi_real_text.py " + " ".join(argv or sys.argv[1:]))
            aggs[(setting, task)] = agg.to_dict()  # the ablation.json form
    encoder = "fine-tuned all-MiniLM-L6-v2 (3 MCT layers, 8 heads)" if args.finetune else \
        "frozen all-MiniLM-L6-v2, cached features; 2 MCT layers, 2 heads, length-bucketed batches"
    section = "\n".join([
        f"### Real MOSI transcripts ({encoder})",
        "",
        f"Command: `python benchmarks/mosi_real_text.py {' '.join(argv or sys.argv[1:])}`; "
        f"{args.seeds} training seeds, evaluation seeds {args.eval_seeds}, up to {args.epochs} epochs; "
        "audio and video absent (zero-length modalities), RMFM on the test split, tau chosen on validation. "
        "Acc2/F1 are Non0 (binary models), Acc7 from the seven-class models; mean ± std over training seeds.",
        "",
        table(aggs, tasks),
        "",
        *[f"- {shift_line(args.out, t)}" for t in tasks],
        *per_seed_lines(aggs),
        "- compute (minutes of training + evaluation, summed over the runs as each logged it): "
        + ", ".join(f"{s}/{t} {compute_minutes(aggs[(s, t)])}" for (s, t) in aggs)
        + f"; wall time of this invocation {(time.time() - t0) / 60:.1f} min (finished runs are skipped on re-runs)",
    ])
    atomic_write_text(args.out / "mosi_results.md", section + "\n")
    print(section)
    if args.results:
        update_marked_section(args.results, "mosi", section)


if __name__ == "__main__":
    main()
