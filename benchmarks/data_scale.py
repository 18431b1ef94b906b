"""Memory and time at CMU-MOSEI scale: pickle vs memory-mapped dataset (issue 18).

Writes a MOSEI-shaped synthetic dataset (16,326 / 1,871 / 4,659 clips; unaligned; text 50 tokens,
audio 500 x 74, vision 500 x 35; random but valid) straight into the mapped form, in blocks of
256 clips, so generation never holds a split. The pickle for the comparison holds the first
``--pickle-scale`` of every split (default 1/8: the full pickle would need about 10 GB of RAM to
load and train, more than the shared machine may spend) and is converted with
``cider data convert``; the same rows are also mapped, so the two forms compare at one size.

Each step runs in its own child process; its peak RSS is the child's ``ru_maxrss`` from
``os.wait4`` (file-backed mapped pages count while they are mapped, so this is what the process
really holds):

- ``generate``: the full mapped dataset, block by block (and the small pickle from its first rows);
- ``convert``: ``cider data convert`` of the small pickle;
- ``train``: CIDer with the demo's CPU settings (frozen default encoder all-MiniLM-L6-v2 with its
  feature cache, 2 MCT layers, 2 heads, batch 128, length buckets), ``--epochs`` full epochs over
  the whole training split plus validation, ``data_on_device`` auto, on the CPU;
- ``eval``: the protocol on the test split, RMFM at rates 0 / 0.5 / 1, one mask seed, MACI on.

Seconds per epoch are the training steps of one complete epoch (``train_seconds`` of
``train_log.csv``) and the whole epoch with validation. Example (the figures in
``docs/performance.md``)::

    python benchmarks/data_scale.py --work runs/scale --epochs 1 --out scale.json --doc docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MOSEI_SIZES = {"train": 16326, "valid": 1871, "test": 4659}
TEXT_LEN, AUDIO, VISION = 50, (500, 74), (500, 35)
BLOCK = 256
SPLIT_SEEDS = {"train": 0, "valid": 1, "test": 2}


def sizes_at(scale: float) -> dict[str, int]:
    return {k: max(2, int(round(n * scale))) for k, n in MOSEI_SIZES.items()}


KEYS = ("text_bert", "audio", "audio_lengths", "vision", "vision_lengths", "regression_labels",
        "classification_labels", "id")


def synth_block(split: str, block: int, n: int, key: str, seed: int = 0) -> np.ndarray:
    """Array ``key`` of clips ``block * BLOCK`` ... of ``split`` (n of them): valid texts, frames zero
    past their lengths. Every key has its own random stream (lengths and labels too), so one key is
    drawn without the others."""
    rng = lambda stream: np.random.default_rng([seed, SPLIT_SEEDS[split], block, stream])  # noqa: E731
    if key == "text_bert":
        r = rng(0)
        lengths = r.integers(3, TEXT_LEN + 1, size=n)
        valid = np.arange(TEXT_LEN)[None, :] < lengths[:, None]
        ids = r.integers(1000, 29000, size=(n, TEXT_LEN))
        ids[:, 0] = 101
        ids[np.arange(n), lengths - 1] = 102
        text = np.zeros((n, 3, TEXT_LEN), dtype=np.int64)
        text[:, 0] = np.where(valid, ids, 0)
        text[:, 1] = valid
        return text
    for i, (name, (steps, dim)) in enumerate((("audio", AUDIO), ("vision", VISION))):
        if key in (name, f"{name}_lengths"):
            n_frames = rng(1 + i).integers(1, steps + 1, size=n)
            if key != name:
                return n_frames.astype(np.int64)
            frames = rng(3 + i).standard_normal((n, steps, dim), dtype=np.float32)
            frames *= (np.arange(steps)[None, :] < n_frames[:, None])[..., None]
            return frames
    y = np.round(rng(5).uniform(-3, 3, size=n), 1).astype(np.float32)
    if key == "regression_labels":
        return y
    if key == "classification_labels":
        return np.where(y < 0, 0, np.where(y > 0, 2, 1)).astype(np.int64)
    return np.array([f"{split}{block}_{i}" for i in range(n)], dtype=object)


def _blocks(split: str, n: int, key: str, seed: int):
    for b in range(0, (n + BLOCK - 1) // BLOCK):
        yield synth_block(split, b, min(BLOCK, n - b * BLOCK), key, seed)


def generate_mapped(out: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """Write the mapped dataset block by block: memory stays at one block of one array."""
    from cider_mer.data.mapped import MappedWriter

    with MappedWriter(out, aligned=False, source="synthetic MOSEI-shaped", force=True) as w:
        for split, n in sizes.items():
            for key in KEYS:
                if key == "id":
                    w.write_strings(split, "id", [s for ids in _blocks(split, n, "id", seed) for s in ids])
                else:
                    shape = (n, *synth_block(split, 0, 1, key, seed).shape[1:])
                    w.write_array(split, key, shape, _blocks(split, n, key, seed))
        w.commit()


def generate_pickle(out: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """The first ``sizes`` clips of every split as a pickle (the same rows as the mapped file)."""
    from cider_mer.data.dataset import save_dataset

    obj = {split: {key: np.concatenate(list(_blocks(split, n, key, seed))) for key in KEYS}
           for split, n in sizes.items()}
    for split in obj.values():
        split["text_bert"] = split["text_bert"].astype(np.float32)  # the field's pickles store floats
    save_dataset(obj, out)


# ----------------------------------------------------------------------------------------------
# the steps (each in a child process)


def _train_config(epochs: int):
    from cider_mer.training.presets import cpu_friendly_config

    return cpu_friendly_config("binary", epochs=epochs, seed=1111, device="cpu")


def step(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from cider_mer.data.dataset import load_dataset

    t0 = time.time()
    if args.step == "generate":
        generate_mapped(Path(args.data), sizes_at(args.scale))
        return {"seconds": round(time.time() - t0, 1)}
    if args.step == "pickle":
        generate_pickle(Path(args.data), sizes_at(args.scale))
        return {"seconds": round(time.time() - t0, 1)}
    if args.step == "convert":
        from cider_mer.data.mapped import convert_dataset

        convert_dataset(args.data, args.run, force=True)
        return {"seconds": round(time.time() - t0, 1)}
    data = load_dataset(args.data)
    load_s = round(time.time() - t0, 1)
    if args.step == "train":
        from cider_mer.training.trainer import train

        result = train(_train_config(args.epochs), data, args.run, progress=False)
        log = (Path(args.run) / "train_log.csv").read_text().splitlines()
        head = log[0].split(",")
        train_s = [float(r.split(",")[head.index("train_seconds")]) for r in log[1:]]
        return {"seconds": round(time.time() - t0, 1), "load_s": load_s, "train_s_per_epoch": train_s,
                "run_s": round(result.seconds, 1), "epochs": result.epochs_run,
                "val_non0_acc2": round(result.best_value, 2)}
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.runs import Run

    res = evaluate(Run.load(args.run, device="cpu"), data, rates=[0.0, 0.5, 1.0], seeds=[0], progress=False)
    return {"seconds": round(time.time() - t0, 1), "load_s": load_s, "eval_s": res.seconds,
            "non0_acc2": [round(v, 2) for v in res.metrics["non0_acc2"].mean]}


def measure(name: str, argv: list[str]) -> dict:
    """Run one step in a child process; its result plus its peak RSS (GiB) and wall seconds."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} failed with exit code {proc.returncode}")
    row = {"step": name, **json.loads(out.strip().splitlines()[-1]),
           "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3), "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict], args) -> str:
    lines = ["| form (size) | step | peak RSS GiB | seconds | notes |", "|---|---|---|---|---|"]
    for r in rows:
        notes = []
        if "train_s_per_epoch" in r:
            notes.append(f"training steps {', '.join(f'{s:.0f}' for s in r['train_s_per_epoch'])} s/epoch; "
                         f"{r['run_s'] / max(r['epochs'], 1):.0f} s/epoch with validation; load {r['load_s']} s")
        if "eval_s" in r:
            notes.append(f"protocol {r['eval_s']:.0f} s; load {r['load_s']} s")
        lines.append(f"| {r['form']} | {r['step']} | {r['peak_rss_gib']:.2f} | {r['wall_s']:.0f} | "
                     f"{'; '.join(notes)} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=False, help="folder for the data, runs and caches")
    ap.add_argument("--scale", type=float, default=1.0, help="size of the mapped dataset (1 = MOSEI)")
    ap.add_argument("--pickle-scale", type=float, default=0.125, help="size of the pickle compared")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--forms", default="small,full",
                    help="small: pickle vs mapped at --pickle-scale (with convert); full: mapped at --scale")
    ap.add_argument("--reuse", action="store_true", help="keep a mapped dataset already generated in --work")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--doc", type=Path, default=None, help="refresh the data-scale table in this Markdown file")
    ap.add_argument("--step", choices=("generate", "pickle", "convert", "train", "eval"), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        print(json.dumps(step(args)), flush=True)
        return {}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CIDER_CACHE_DIR"] = str(work / "cache")
    common = ["--threads", str(args.threads), "--epochs", str(args.epochs)]
    full, pkl, small = work / "mosei_full", work / "mosei_small.pkl", work / "mosei_small"
    rows = []

    def run(form, name, extra):
        rows.append({"form": form, **measure(name, ["--step", name, *common, *extra])})

    forms = set(args.forms.split(","))
    trained = []
    if not (args.reuse and full.is_dir()):
        run(f"mapped ({args.scale:g})", "generate", ["--data", str(full), "--scale", str(args.scale)])
    if "small" in forms:
        run(f"pickle ({args.pickle_scale:g})", "pickle", ["--data", str(pkl), "--scale", str(args.pickle_scale)])
        run(f"pickle -> mapped ({args.pickle_scale:g})", "convert", ["--data", str(pkl), "--run", str(small)])
        trained += [(f"pickle ({args.pickle_scale:g})", pkl), (f"mapped ({args.pickle_scale:g})", small)]
    if "full" in forms:
        trained.append((f"mapped ({args.scale:g})", full))
    for form, data in trained:
        run_dir = work / f"run_{Path(data).stem}_{Path(data).suffix.strip('.') or 'mm'}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        run(form, "train", ["--data", str(data), "--run", str(run_dir)])
        run(form, "eval", ["--data", str(data), "--run", str(run_dir)])
    command = " ".join(["python", "benchmarks/data_scale.py", *(argv if argv is not None else sys.argv[1:])])
    summary = {"rows": rows, "command": command, "sizes": sizes_at(args.scale),
               "pickle_sizes": sizes_at(args.pickle_scale)}
    print(table(rows, args))
    if args.out:
        from cider_mer.io_utils import atomic_write_json, versions

        atomic_write_json(args.out, {**summary, "versions": versions()})
    if args.doc:
        from cider_mer.io_utils import update_marked_section

        update_marked_section(args.doc, "data-scale", f"Command: `{command}`\n\n{table(rows, args)}")
    return summary


if __name__ == "__main__":
    main()
