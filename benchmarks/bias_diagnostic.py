"""Can removing a bias vocabulary's evidence help on a split? The bias-only model on the OOD test.

Not a result and never a selection: an analysis that reads the TEST labels, to explain the debiasing
tables of ``docs/results.md``. For each OOD file (the files ``debias_mosi.py`` prepares: real MOSI
re-splits, stratified and prior-shifted, and the synthetic control), and for each bias vocabulary,
it fits the bias-only model that group selection uses (:func:`cider_mer.debias.bias_model.fit_bias_model`,
logistic regression on the bag of bias word-pieces, TRAINING split) and reports its Non0 Acc2 on
validation and on the OOD test. Vocabularies:

- ``statistical``: MACI's rule (:func:`cider_mer.maci.counterfactual.build_bias_vocabulary`, top 100);
- ``given``: the words of ``--bias-words`` (``planted``: the synthetic generator's topic words);
- ``statistical-lexicon`` (with ``--lexicon``): the statistical rule with every word-piece that is a
  word of VADER's sentiment lexicon removed before the top 100 are kept (needs ``pip install
  vaderSentiment``; an automatic try at keeping genuine sentiment words out of the bias).

Reading: counterfactual subtraction and a product of experts take the bias-only evidence *out* of
the prediction. That gains on the OOD test only where this evidence is wrong there, i.e. where the
bias-only model scores below chance (a shortcut that the shift reverses); above chance it is
evidence that still holds, and removing it costs accuracy.

    python benchmarks/bias_diagnostic.py --mosi-dir runs/debias --synth-dir runs/debias_synth \\
        --bias-words planted --lexicon --results docs/results.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cider_mer.io_utils import atomic_write_json, update_marked_section

MOSI_KINDS = ("stratified", "prior_shift")
TOP_K = 100  # MACI's vocabulary size (TrainConfig.cf_vocab_size)


def lexicon_piece_ids(tokenizer) -> np.ndarray:
    """(S,) ids of the tokenizer's whole-word entries that are words of VADER's sentiment lexicon."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        sys.exit("error: --lexicon needs the VADER lexicon: pip install vaderSentiment==3.3.2")
    lexicon = SentimentIntensityAnalyzer().lexicon
    return np.asarray(sorted(i for piece, i in tokenizer.get_vocab().items() if piece in lexicon), dtype=np.int64)


def vocabularies(train, tokenizer, bias_words: list[str], lexicon_ids: np.ndarray | None) -> dict[str, np.ndarray]:
    """name -> (K,) word-piece ids of each bias vocabulary, from the training split."""
    from cider_mer.maci.counterfactual import build_bias_vocabulary, word_piece_ids

    ranked = build_bias_vocabulary(train, "binary", top_k=10**9).token_ids  # every biased piece, by frequency
    vocabs = {"statistical": ranked[:TOP_K]}
    if bias_words:
        vocabs["given"] = word_piece_ids(bias_words, tokenizer)
    if lexicon_ids is not None:
        vocabs["statistical-lexicon"] = ranked[~np.isin(ranked, lexicon_ids)][:TOP_K]
    return vocabs


def bias_only_accuracy(data, token_ids: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Non0 Acc2 of the training-split bias-only model on validation and on the (OOD) test."""
    from cider_mer.debias.bias_model import fit_bias_model
    from cider_mer.metrics import binary_metrics

    model = fit_bias_model(data["train"], token_ids, "binary", seed=seed)
    out = {"k": int(len(token_ids))}
    for split in ("valid", "test"):
        s = data[split]
        out[split] = binary_metrics(model.logits(s.text_ids, s.text_mask), s.labels("binary"))["non0_acc2"]
    return out


def diagnose(files: dict[tuple[str, int], Path], tokenizer, bias_words: list[str], lexicon_ids, log: Callable) -> dict:
    """{(kind, split seed): {vocabulary: {"k", "valid", "test"}}} for every file."""
    from cider_mer.data.dataset import load_dataset

    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for (kind, seed), path in sorted(files.items()):
        data = load_dataset(path)
        vocabs = vocabularies(data["train"], tokenizer, bias_words if kind == "synthetic" else [], lexicon_ids)
        rows[(kind, seed)] = {name: bias_only_accuracy(data, ids) for name, ids in vocabs.items()}
        log(f"{kind} s{seed}: " + ", ".join(f"{n} test {r['test']:.1f}" for n, r in rows[(kind, seed)].items()))
    return rows


def render(rows: dict, args, minutes: float) -> str:
    names = ["statistical", "statistical-lexicon", "given"]
    names = [n for n in names if any(n in r for r in rows.values())]
    head = "| split | seed | " + " | ".join(f"{n}: K, valid, **OOD test**" for n in names) + " |"
    lines = [
        "### Bias-only model on the OOD test (an analysis that reads test labels; never a selection)",
        "",
        f"Command: `python benchmarks/bias_diagnostic.py {' '.join(args.argv)}`. Non0 Acc2 (%) of the "
        "bias-only logistic regression (the one group selection uses) fitted on the training split over each "
        "vocabulary; K = its word-pieces. Below 50 on the OOD test: a shortcut the shift reverses, which "
        "debiasing can gain on; above 50: evidence that still holds there, which debiasing removes. "
        "`given` = the synthetic generator's planted topic words (synthetic files only).",
        "",
        head,
        "|" + "---|" * (2 + len(names)),
    ]
    means: dict[tuple[str, str], list[float]] = {}
    for (kind, seed), by_vocab in sorted(rows.items()):
        cells = []
        for n in names:
            r = by_vocab.get(n)
            cells.append("—" if r is None else f"{r['k']}, {r['valid']:.1f}, **{r['test']:.1f}**")
            if r is not None:
                means.setdefault((kind, n), []).append(r["test"])
        lines.append(f"| {kind} | {seed} | " + " | ".join(cells) + " |")
    lines += ["", "Mean OOD-test Non0 Acc2 of the bias-only model: " + "; ".join(
        f"{kind} / {n} {np.mean(v):.1f}" for (kind, n), v in sorted(means.items())) + ".",
        f"- wall time: {minutes:.1f} min (2-core CPU)"]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=Path("../shared/data/mosi/label.csv"))
    ap.add_argument("--mosi-dir", type=Path, default=None, help="real MOSI re-splits (debias_mosi.py --out)")
    ap.add_argument("--synth-dir", type=Path, default=None, help="synthetic OOD files (debias_mosi.py --synthetic --out)")
    ap.add_argument("--split-seeds", default="0,1,2,3")
    ap.add_argument("--bias-words", default="", help="comma-separated words, or 'planted' (synthetic files)")
    ap.add_argument("--lexicon", action="store_true", help="add the statistical vocabulary minus VADER's lexicon")
    ap.add_argument("--results", type=Path, default=None, help="Markdown file to update (section bias-diagnostic)")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.mosi_dir is None and args.synth_dir is None:
        sys.exit("error: give --mosi-dir and/or --synth-dir")
    sys.path.insert(0, str(Path(__file__).parent))
    import debias_mosi as bench  # the sibling benchmark: its data preparation and the planted words
    seeds = bench.csv_list(args.split_seeds, int)
    bias_words = bench.planted_topic_words() if args.bias_words == "planted" else bench.csv_list(args.bias_words)

    from cider_mer.text.encoder import load_tokenizer

    t0 = time.time()
    tokenizer = load_tokenizer(None)
    files: dict[tuple[str, int], Path] = {}
    if args.mosi_dir is not None:
        if not args.csv.is_file():
            sys.exit(f"error: {args.csv}: no such file (the real MOSI transcripts)")
        files.update(bench.prepare_real(args.csv, args.mosi_dir, seeds, list(MOSI_KINDS), False, print)["files"])
    if args.synth_dir is not None:
        files.update(bench.prepare_synthetic(args.synth_dir, seeds, 1.0)["files"])
    lexicon_ids = lexicon_piece_ids(tokenizer) if args.lexicon else None
    rows = diagnose(files, tokenizer, bias_words, lexicon_ids, print)
    section = render(rows, args, (time.time() - t0) / 60)
    print(section)
    out = args.mosi_dir or args.synth_dir
    atomic_write_json(out / "bias_diagnostic.json", {"rows": {f"{k}/{s}": v for (k, s), v in rows.items()},
                                                     "argv": args.argv})
    if args.results:
        update_marked_section(args.results, "bias-diagnostic", section)


if __name__ == "__main__":
    main()
