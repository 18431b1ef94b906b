"""Tiny random encoders and datasets for fast tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

from cider_mer.data.dataset import dataset_from_dict, save_dataset

from conftest import make_dataset_dict


def tiny_bert_dir(root: Path, hidden: int = 16, vocab: int = 6000, seed: int = 0) -> Path:
    """Save a 1-layer random BertModel to ``root`` and return its path (a local encoder dir)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=64)
    path = root / "tiny-bert"
    BertModel(cfg, add_pooling_layer=False).save_pretrained(path)
    return path


def tiny_data_file(root: Path, name: str = "tiny.pkl", seed: int = 0, sizes=(60, 20, 24), **kw) -> Path:
    path = root / name
    save_dataset(dataset_from_dict(make_dataset_dict(seed=seed, sizes=sizes, **kw)), path)
    return path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """Run ``cider ARGV`` in-process; returns (exit code, stdout, stderr)."""
    from cider_mer.cli import main

    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    """The single line a refused command prints (asserts there is exactly one, and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def benchmark_module(name: str):
    """The script ``benchmarks/<name>.py`` loaded as a module (registered in ``sys.modules`` so its
    dataclasses resolve their annotations)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
