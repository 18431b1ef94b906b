"""Training and evaluation speed of CIDer with a bert-base-sized encoder (issue: fast GPU training).

Builds a synthetic MOSI-shaped dataset (1,284/229/686; unaligned 50/375/500; d 5/20) and a
randomly initialised bert-base-sized encoder in memory (hidden 768, 12 layers, 12 heads, FFN
3072, vocab 30522; nothing is downloaded), then trains CIDer with the paper's fixed settings
(batch 128, E = 32, 3 MCT layers, 8 heads, loss weights recon 0.6 / attn 0.1 / joint 0.5,
fine-tuned encoder, two-stage MSSD step). Per epoch it prints:

- ``train_s``: training seconds (no evaluation),
- ``eval_s``: one full protocol pass on the test split (11 RMFM rates, factual + counterfactual),
- ``peak_gib``: ``torch.cuda.max_memory_allocated`` (GPU only),
- ``loss``: the epoch's mean stage-2 objective (CE + weighted distillation terms on incomplete input),
- ``val_acc2``: validation Non0 Acc2 (complete data, tau chosen on validation).

Examples::

    python benchmarks/train_speed.py --device cuda --precision bf16 --epochs 5
    python benchmarks/train_speed.py --device cuda --exact --epochs 5          # fp32 reference
    python benchmarks/train_speed.py --tiny --epochs 1                          # CPU smoke test

``--tiny`` shrinks the data (scale 0.05) and the encoder (1 layer, width 32) so it runs on a CPU
in seconds. Results go to stdout and, with ``--out``, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_encoder(tiny: bool):
    from transformers import BertConfig, BertModel

    from cider_mer.text.encoder import TextEncoder

    if tiny:
        cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)
    else:
        cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072)
    return TextEncoder(BertModel(cfg, add_pooling_layer=False), name="bert-base-random" if not tiny else "tiny-random")


def protocol_pass(run, split, aligned: bool) -> float:
    """Seconds for one RMFM pass over 11 rates (factual + counterfactual), one mask seed."""
    from cider_mer.metrics import RATES_DEFAULT
    from cider_mer.missing import EvalMissingness

    device = split.device
    sync(device)
    t = time.perf_counter()
    em = EvalMissingness("RMFM", *split.padding_masks(), seed=0, aligned=aligned)
    for rate in RATES_DEFAULT:
        run.debiaser.predict(run.model, split, em.masks(rate))
    sync(device)
    return time.perf_counter() - t


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--exact", action="store_true", help="fp32, no TF32, deterministic algorithms (matches CPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke-test sizes")
    ap.add_argument("--seed", type=int, default=1111)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    from cider_mer.config import TrainConfig
    from cider_mer.data.synth import write_synthetic
    from cider_mer.io_utils import atomic_write_json, versions
    from cider_mer.runs import Run, autocast_dtype_for, resolve_device
    from cider_mer.training.trainer import EpochRandomness, build_optimizer, set_tf32, train_epoch, validate

    device = resolve_device(args.device)
    precision = "fp32" if args.exact else args.precision
    set_tf32(device, not args.exact)
    if args.exact:
        torch.use_deterministic_algorithms(True, warn_only=True)
    autocast_dtype = autocast_dtype_for(precision, device)

    tmp = Path(tempfile.mkdtemp(prefix="cider-speed-"))
    data_path = tmp / "synth.pkl"
    data = write_synthetic(data_path, seed=0, scale=0.05 if args.tiny else 1.0)
    cfg = TrainConfig(model_config={"layers": 3, "heads": 8, "hidden": 32}, batch_size=128, recon_weight=0.6,
                      attn_weight=0.1, joint_weight=0.5, freeze_text_encoder=False, seed=args.seed,
                      precision=precision, compile=args.compile, device=str(device))
    import os

    os.environ.setdefault("CIDER_CACHE_DIR", str(tmp / "cache"))
    torch.manual_seed(args.seed)  # the random encoder's weights, so that repetitions train the same model
    run = Run.create(cfg, data, tmp / "run", encoder=make_encoder(args.tiny))
    model = run.model
    train_split, valid_split, test_split = (run.split(data, name) for name in ("train", "valid", "test"))
    optimizer = build_optimizer(model, cfg)
    if args.compile:
        model.backbone = torch.compile(model.backbone)
    rng = EpochRandomness(torch.Generator().manual_seed(cfg.seed + 2),
                          torch.Generator(device=device).manual_seed(cfg.seed + 1))

    rows = []
    for epoch in range(1, args.epochs + 1):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t = time.perf_counter()
        sums, n_batches = train_epoch(model, optimizer, train_split, cfg, rng, autocast_dtype)
        sync(device)
        train_s = time.perf_counter() - t
        loss = float(sums["loss"]) / max(n_batches, 1)  # read after timing: the only host sync of the epoch
        peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None
        val = validate(run, valid_split)
        eval_s = protocol_pass(run, test_split, data.aligned)
        row = {"epoch": epoch, "train_s": round(train_s, 3), "eval_s": round(eval_s, 3),
               "peak_gib": peak, "loss": round(loss, 6), "val_acc2": round(val["val_non0_acc2"], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    steady = [r["train_s"] for r in rows[1:5]] or [r["train_s"] for r in rows]
    summary = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision, "exact": args.exact, "compile": args.compile, "tiny": args.tiny,
        "median_train_s_epochs_2_5": statistics.median(steady),
        "median_eval_s": statistics.median(r["eval_s"] for r in rows),
        "max_peak_gib": max(r["peak_gib"] for r in rows) if device.type == "cuda" else None,
        "final_val_acc2": rows[-1]["val_acc2"], "epochs": rows, "versions": versions(),
        "command": " ".join(["python", "benchmarks/train_speed.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("epochs", "versions")}), flush=True)
    if args.out:
        atomic_write_json(args.out, summary)
    return summary


if __name__ == "__main__":
    main()
