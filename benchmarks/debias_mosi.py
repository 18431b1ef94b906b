"""Debiasing under distribution shift with an honest protocol: paired differences against no debiasing.

Not a test: a benchmark that writes tables (docs/debiasing.md explains the methods). Steps, each
resumable (a finished run, or its metrics, is skipped on a re-run):

1. data: real CMU-MOSI transcripts (``label.csv``, text only, as ``mosi_real_text.py``) re-split
   by ``cider data ood-split`` with every split seed, stratified and ``--prior-shift``; the IID
   file itself for the IID cost. ``--synthetic`` instead uses ``cider data synth --ood`` files
   (one per split seed; the positive control, whose bias is a genuine shortcut), whose IID twin
   shares train/valid, so the IID cost needs no extra training;
2. every method x training seed trained on each file (binary task, the demo's CPU settings);
3. per run, on the OOD test at missing rate 0: Non0 and Has0 Acc2 with tau chosen on validation
   by the method's criterion, the neutral-prediction rate, tau, AUILC over ``--rates`` (off with
   ``--rates 0``) and, for counterfactual methods, the oracle-tau ceiling (tau chosen on the TEST
   labels; labelled, never a result);
4. per split kind, the paired difference method - ``none`` on the same (split seed, training
   seed): mean and 95 % t-interval; plus the IID-test cost. Markdown between
   ``<!-- debias:begin -->`` / ``<!-- debias:end -->`` of ``--results`` (``debias-synthetic`` with
   ``--synthetic``, or ``--results-tag``) and ``OUT/debias_results.json``.

``--bias-words`` (a comma list, or ``planted``: the synthetic generator's topic words) adds the
methods ``<name>+words``, the same methods with those words as the bias vocabulary.

    python benchmarks/debias_mosi.py --out runs/bench_debias --results docs/results.md
    python benchmarks/debias_mosi.py --split-seeds 0 --split-kinds stratified --train-seeds 0 \\
        --methods none,poe,maci_valid_cf --epochs 3 --rates 0,1      # the smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cider_mer.io_utils import atomic_write_json, atomic_write_text, read_json, update_marked_section

VALID_CF = {"cf_fill": "unk", "cf_other_modalities": "absent", "cf_centre": True}
PLAIN_HEAD = {"head": "linear", "counterfactual": False}


def method_table(selection: str, bias_words: list[str] | None = None) -> dict[str, tuple[dict[str, Any], str]]:
    """name -> (TrainConfig changes on the demo settings, description). With ``bias_words``, every method
    that reads the bias vocabulary also comes as ``<name>+words``: the same with the given words as it."""
    sel = {"selection": selection}
    table = {
        "none": (dict(PLAIN_HEAD), "no debiasing: linear head, plain validation (the reference)"),
        "group_select": ({**PLAIN_HEAD, **sel}, f"no debiasing, {selection} validation"),
        "maci_paper": ({"head": "mcm", "counterfactual": True}, "the paper's MACI (MCM, [MASK] counterfactual), "
                       "plain validation"),
        "maci_valid_cf": ({"head": "mcm", "counterfactual": True, **VALID_CF, **sel},
                          f"MACI with [UNK] fill, absent audio/vision, centred counterfactual; {selection} validation"),
        "poe": ({**PLAIN_HEAD, "debias": "poe", **sel}, f"trained bias branch, product of experts; {selection} "
                "validation"),
        "learned_mixin": ({**PLAIN_HEAD, "debias": "learned_mixin", **sel},
                          f"trained bias branch, learned-mixin; {selection} validation"),
    }
    if bias_words:
        shown = ", ".join(bias_words[:6]) + (", ..." if len(bias_words) > 6 else "")
        table.update({f"{name}+words": ({**changes, "bias_words": list(bias_words)},
                                         f"{desc}; bias vocabulary = the {len(bias_words)} given words ({shown})")
                      for name, (changes, desc) in table.items() if name != "none"})
    return table


def planted_topic_words() -> list[str]:
    """The topic words whose label correlation the synthetic generator plants (and the OOD test reverses)."""
    from cider_mer.data.synth import TOPIC_WORDS_A, TOPIC_WORDS_B

    return list(TOPIC_WORDS_A + TOPIC_WORDS_B)


def csv_list(text: str, kind=str) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


# ----------------------------------------------------------------------------- data


def prepare_real(csv: Path, out: Path, split_seeds: list[int], kinds: list[str], iid: bool, log) -> dict:
    """{(kind, split seed): file} for the OOD re-splits, plus ("iid", 0) when asked; and the shift lines."""
    from cider_mer.data.import_csv import import_csv
    from cider_mer.data.ood_split import manifest_path, write_ood_split

    out.mkdir(parents=True, exist_ok=True)
    iid_file = out / "mosi_iid.pkl"
    if not iid_file.is_file():
        import_csv(csv, iid_file)
        log(f"imported {csv} -> {iid_file}")
    files, shifts = {}, {}
    for kind in kinds:
        for seed in split_seeds:
            path = out / f"mosi_ood_{kind}_s{seed}.pkl"
            if not path.is_file():
                write_ood_split(iid_file, path, task="binary", seed=seed, report=True,
                                prior_shift=kind == "prior_shift")
            m = read_json(manifest_path(path))
            shifts[(kind, seed)] = {"bow_iid": m["shift"]["bow_acc_iid_test"],
                                    "bow_ood": m["shift"]["bow_acc_ood_test"],
                                    "train_priors": m["priors"]["train"], "test_priors": m["priors"]["test"]}
            files[(kind, seed)] = path
    if iid:
        files[("iid", 0)] = iid_file
    return {"files": files, "shifts": shifts}


def prepare_synthetic(out: Path, split_seeds: list[int], scale: float) -> dict:
    """{("synthetic", seed): OOD file} and the IID twins (same train/valid, unshifted test)."""
    from cider_mer.data.synth import write_synthetic

    out.mkdir(parents=True, exist_ok=True)
    files, twins = {}, {}
    for seed in split_seeds:
        for kind in ("ood", "iid"):
            path = out / f"synth_{kind}_s{seed}.pkl"
            if not path.is_file():
                write_synthetic(path, seed=seed, scale=scale, ood=kind == "ood")
            (files if kind == "ood" else twins)[("synthetic", seed)] = path
    return {"files": files, "twins": twins, "shifts": {}}


# ----------------------------------------------------------------------------- one run


def rate0_metrics(run, data) -> dict[str, Any]:
    """Test metrics at rate 0 with tau chosen on validation, the neutral rate, and the oracle-tau ceiling."""
    from cider_mer.evaluation.protocol import best_over_tau
    from cider_mer.metrics import task_metrics

    deb = run.debiaser
    tau, _ = deb.tune(run.model, run.split(data, "valid"))
    test = run.split(data, "test")
    pred = deb.predict(run.model, test)
    y = test.labels.cpu().numpy()
    scores = deb.scores(pred, tau)
    m = task_metrics("binary", scores, y)
    out = {"non0_acc2": m["non0_acc2"], "has0_acc2": m["has0_acc2"], "tau": tau,
           "neutral_rate": float((scores.argmax(axis=1) == 1).mean() * 100.0)}
    if deb.active:  # the protocol's oracle: each tau scored as the run scores, the smallest best tau
        values, taus = best_over_tau("binary", deb, pred, y)
        out.update(oracle_non0_acc2=values["non0_acc2"], oracle_tau=taus["non0_acc2"])
    return out


def run_one(cfg, data_path: Path, run_dir: Path, encoder, rates: list[float], twin: Path | None) -> dict[str, Any]:
    """Train (or continue) one run and measure it; cached as ``run_dir/bench_metrics.json``."""
    from cider_mer.data.dataset import load_dataset
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.runs import load_run
    from cider_mer.training.trainer import train

    cached = run_dir / "bench_metrics.json"
    if cached.is_file():
        return read_json(cached)
    data = load_dataset(data_path)
    t0 = time.time()
    result = train(cfg, data, run_dir, resume=(run_dir / "config.json").is_file(), progress=False, encoder=encoder)
    run = load_run(run_dir, device=cfg.device, encoder=encoder)
    out: dict[str, Any] = {"best_epoch": result.best_epoch, "best_val_selection": result.best_value,
                           "train_seconds": round(result.seconds, 1), **rate0_metrics(run, data)}
    if len(rates) >= 2:
        res = evaluate(run, data, rates=rates, seeds=[0], progress=False)
        out["auilc_non0_acc2"] = res.auilc.get("non0_acc2")
    if twin is not None:  # synthetic: the IID test of the same train/valid
        out["iid_non0_acc2"] = rate0_metrics(run, load_dataset(twin))["non0_acc2"]
    out["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(cached, out)
    return out


# ----------------------------------------------------------------------------- paired statistics


def paired(deltas: list[float]) -> dict[str, Any]:
    """Mean and 95 % t-interval of paired differences (no interval for n < 2)."""
    from scipy import stats  # a scikit-learn dependency

    d = np.asarray([x for x in deltas if x is not None and math.isfinite(x)], dtype=np.float64)
    if d.size == 0:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    if d.size == 1:
        return {"n": 1, "mean": float(d[0]), "lo": None, "hi": None}
    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return {"n": int(d.size), "mean": float(d.mean()), "lo": float(d.mean() - half), "hi": float(d.mean() + half)}


def fmt_delta(p: dict[str, Any]) -> str:
    if p["mean"] is None:
        return "—"
    if p["lo"] is None:
        return f"{p['mean']:+.2f} (n=1)"
    return f"{p['mean']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}]"


def fmt_mean(values: list) -> str:
    v = [x for x in values if x is not None]
    return "—" if not v else f"{np.mean(v):.2f}"


def summarise(records: dict, methods: list[str], kinds: list[str], iid_kind: str | None) -> dict:
    """Per kind and method: paired deltas against ``none`` and plain means."""
    summary: dict[str, Any] = {}
    for kind in kinds:
        rows = {}
        for method in methods:
            mine = {(s, t): r for (k, m, s, t), r in records.items() if k == kind and m == method}
            ref = {(s, t): r for (k, m, s, t), r in records.items() if k == kind and m == "none"}
            keys = sorted(set(mine) & set(ref))
            row: dict[str, Any] = {"pairs": len(keys)}
            for metric in ("non0_acc2", "has0_acc2", "auilc_non0_acc2", "neutral_rate"):
                row[f"delta_{metric}"] = paired([_sub(mine[k].get(metric), ref[k].get(metric)) for k in keys])
            for metric in ("non0_acc2", "neutral_rate", "tau", "oracle_non0_acc2", "oracle_tau"):
                row[metric] = [mine[k].get(metric) for k in sorted(mine)]
            if iid_kind == "twin":
                row["delta_iid_non0_acc2"] = paired([_sub(mine[k].get("iid_non0_acc2"), ref[k].get("iid_non0_acc2"))
                                                     for k in keys])
            elif iid_kind is not None:
                iid_mine = {t: r for (k, m, s, t), r in records.items() if k == iid_kind and m == method}
                iid_ref = {t: r for (k, m, s, t), r in records.items() if k == iid_kind and m == "none"}
                row["delta_iid_non0_acc2"] = paired([_sub(iid_mine[t]["non0_acc2"], iid_ref[t]["non0_acc2"])
                                                     for t in sorted(set(iid_mine) & set(iid_ref))])
            rows[method] = row
        summary[kind] = rows
    return summary


def _sub(a, b):
    return None if a is None or b is None else float(a) - float(b)


def render(summary: dict, table: dict, args, shifts: dict, minutes: float) -> str:
    head = ("| method | pairs | OOD Non0 Acc2 (mean) | Δ Non0 Acc2 [95% CI] | Δ Has0 Acc2 | Δ AUILC Non0 | "
            "neutral % (Δ) | tau chosen | oracle-tau Non0 (ceiling, test labels) | Δ IID Non0 Acc2 (cost) |")
    lines = [
        "### Debiasing under distribution shift: paired differences against no debiasing",
        "",
        f"Command: `python benchmarks/debias_mosi.py {' '.join(args.argv)}`. "
        f"{'Synthetic OOD files (positive control)' if args.synthetic else 'Real MOSI transcripts, text only'}; "
        f"split seeds {args.split_seeds}, training seeds {args.train_seeds}, up to {args.epochs} epochs, demo settings "
        "(frozen all-MiniLM-L6-v2). Every selection (checkpoint, tau) reads validation only; Δ = method − `none` on "
        "the same (split seed, training seed), mean and 95 % t-interval. Neutral % = share of neutral predictions "
        "on the OOD test. The oracle column chooses tau on the test labels: a ceiling, never a result.",
        "",
    ]
    if args.note:
        lines += [f"**{args.note}**", ""]
    for name, (changes, desc) in table.items():
        if name in args.methods:
            lines.append(f"- `{name}`: {desc}")
    for kind, rows in summary.items():
        lines += ["", f"**{kind}**" + (f" (AUILC over rates {args.rates})" if len(args.rates) >= 2 else ""), "",
                  head, "|" + "---|" * 10]
        for method, row in rows.items():
            has_tau = any(v is not None for v in row["oracle_non0_acc2"])  # counterfactual methods only
            tau_txt = ", ".join(f"{t:.1f}" for t in row["tau"]) if has_tau else "— (no tau)"
            oracle = "—" if not has_tau else \
                f"{fmt_mean(row['oracle_non0_acc2'])} (tau {', '.join(f'{t:.1f}' for t in row['oracle_tau'])})"
            neutral = f"{fmt_mean(row['neutral_rate'])} ({fmt_delta(row['delta_neutral_rate'])})"
            iid = fmt_delta(row["delta_iid_non0_acc2"]) if "delta_iid_non0_acc2" in row else "—"
            cells = [f"`{method}`", str(row["pairs"]), fmt_mean(row["non0_acc2"]), fmt_delta(row["delta_non0_acc2"]),
                     fmt_delta(row["delta_has0_acc2"]), fmt_delta(row["delta_auilc_non0_acc2"]), neutral, tau_txt,
                     oracle, iid]
            lines.append("| " + " | ".join(cells) + " |")
    if shifts:
        lines += ["", "Bag-of-words shift of the splits (Non0 Acc2 on test, IID re-split vs OOD; train priors):"]
        for (kind, seed), sh in sorted(shifts.items()):
            lines.append(f"- {kind} seed {seed}: IID {sh['bow_iid']:.2f}, OOD {sh['bow_ood']:.2f}; train priors "
                         f"{' / '.join(f'{p:.4f}' for p in sh['train_priors'])}, test priors "
                         f"{' / '.join(f'{p:.4f}' for p in sh['test_priors'])}")
    lines.append(f"- wall time of this invocation: {minutes:.1f} min (finished runs are reused)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=Path("../shared/data/mosi/label.csv"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_debias"))
    ap.add_argument("--split-seeds", default="0,1,2,3")
    ap.add_argument("--split-kinds", default="stratified,prior_shift", help="stratified and/or prior_shift (real MOSI)")
    ap.add_argument("--train-seeds", default="0,1,2", help="training seeds (added to the base seed 1111)")
    ap.add_argument("--methods", default="none,group_select,maci_paper,maci_valid_cf,poe,learned_mixin")
    ap.add_argument("--selection", default="group_mean", help="criterion of the methods that use group selection")
    ap.add_argument("--bias-words", default="",
                    help="comma-separated words of a known confound, or 'planted' (the synthetic data's topic "
                         "words); adds the methods '<name>+words' that use them as the bias vocabulary")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--rates", default="0,0.5,1", help="RMFM rates of the AUILC; '0' turns it off")
    ap.add_argument("--no-iid", action="store_true", help="skip the IID-cost runs (real MOSI)")
    ap.add_argument("--synthetic", action="store_true", help="the synthetic OOD positive control instead of MOSI")
    ap.add_argument("--synth-scale", type=float, default=1.0, help="size factor of the synthetic files")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=None, help="Markdown file to update (e.g. docs/results.md)")
    ap.add_argument("--results-tag", default=None,
                    help="name of the marked section in --results (default: debias, or debias-synthetic)")
    ap.add_argument("--table-only", action="store_true",
                    help="train nothing: the tables from the runs already measured in --out")
    ap.add_argument("--note", default="", help="a line shown above the table (e.g. 'Smoke run: ...')")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.split_seeds, args.train_seeds = csv_list(args.split_seeds, int), csv_list(args.train_seeds, int)
    args.methods, args.rates = csv_list(args.methods), csv_list(args.rates, float)
    args.bias_words = planted_topic_words() if args.bias_words == "planted" else csv_list(args.bias_words)
    table = method_table(args.selection, args.bias_words)
    unknown = sorted(set(args.methods) - set(table))
    if unknown or "none" not in args.methods:
        sys.exit(f"error: --methods must include 'none' and name only {sorted(table)}; unknown {unknown}")
    if not args.synthetic and not args.csv.is_file():
        sys.exit(f"error: {args.csv}: no such file (the real MOSI transcripts)")

    from cider_mer.text.encoder import TextEncoder
    from cider_mer.training.presets import cpu_friendly_config

    t0 = time.time()
    if args.synthetic:
        prepared = prepare_synthetic(args.out, args.split_seeds, args.synth_scale)
        kinds, iid_kind = ["synthetic"], "twin"
    else:
        kinds = csv_list(args.split_kinds)
        prepared = prepare_real(args.csv, args.out, args.split_seeds, kinds, not args.no_iid, print)
        iid_kind = None if args.no_iid else "iid"
    encoder = TextEncoder.from_pretrained(None, frozen=True)
    records = {}
    for (kind, split_seed), path in prepared["files"].items():
        for train_seed in args.train_seeds:  # pair-major: a cut-short invocation leaves whole pairs
            for method in args.methods:
                cfg = cpu_friendly_config("binary", epochs=args.epochs, seed=1111 + train_seed,
                                          device=args.device).with_overrides(**table[method][0])
                run_dir = args.out / "runs" / f"{kind}_s{split_seed}" / method / f"seed{train_seed}"
                if args.table_only and not (run_dir / "bench_metrics.json").is_file():
                    continue
                twin = prepared.get("twins", {}).get((kind, split_seed))
                rec = run_one(cfg, path, run_dir, encoder, args.rates if kind != "iid" else [0.0], twin)
                records[(kind, method, split_seed, train_seed)] = rec
                print(f"{kind} s{split_seed} {method} seed {train_seed}: Non0 {rec['non0_acc2']:.2f}, "
                      f"tau {rec['tau']:.1f}, neutral {rec['neutral_rate']:.1f}% ({rec['seconds']:.0f}s)", flush=True)
    summary = summarise(records, args.methods, kinds, iid_kind)
    section = render(summary, table, args, prepared["shifts"], (time.time() - t0) / 60)
    atomic_write_text(args.out / "debias_results.md", section + "\n")
    atomic_write_json(args.out / "debias_results.json", {
        "summary": summary, "runs": {"/".join(map(str, k)): v for k, v in records.items()},
        "shifts": {f"{k}/{s}": v for (k, s), v in prepared["shifts"].items()}, "argv": args.argv})
    print(section)
    if args.results:
        tag = args.results_tag or ("debias-synthetic" if args.synthetic else "debias")
        update_marked_section(args.results, tag, section)


if __name__ == "__main__":
    main()
