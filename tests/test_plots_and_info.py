"""`cider model-info`, `cider maci vocab`, and the two pictures of a trained run."""

import json

import pytest

from cider_mer.cli import main
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import load_dataset
from cider_mer.runs import load_run
from cider_mer.training.trainer import train

from helpers import tiny_bert_dir, tiny_data_file

SPEC_SHAPES = ["--layers", "2", "--hidden", "32", "--text-dim", "768", "--audio-dim", "5", "--vision-dim", "20",
               "--text-len", "50", "--audio-len", "375", "--vision-len", "500", "--json"]


@pytest.mark.parametrize("task,total,maci", [("binary", 244086, 33545), ("seven", 251806, 41265)])
@pytest.mark.parametrize("heads", ["1", "8"])
def test_model_info_cli_spec_counts(capsys, task, total, maci, heads):
    main(["model-info", "--task", task, "--heads", heads, *SPEC_SHAPES])
    info = json.loads(capsys.readouterr().out)
    assert info["params_excluding_text_encoder"] == total
    assert info["params_maci"] == maci


def test_model_info_second_architecture_and_no_maci(capsys):
    main(["model-info", "--model", "late_fusion", "--text-dim", "768", "--json"])
    with_maci = json.loads(capsys.readouterr().out)
    main(["model-info", "--model", "late_fusion", "--text-dim", "768", "--json", "--no-maci"])
    without = json.loads(capsys.readouterr().out)
    # the MCM head for D = 768 + 5 + 20, E = 32, C = 3 on a 96-d joint representation: 33,545
    assert with_maci["params_maci"] == 33545 and without["params_maci"] == 0
    assert with_maci["params_excluding_text_encoder"] - without["params_excluding_text_encoder"] == 33545 - (96 * 3 + 3)
    with pytest.raises(SystemExit) as e:
        main(["model-info", "--model", "late_fusion", "--layers", "2"])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    import os

    os.environ["CIDER_CACHE_DIR"] = str(root / "cache")
    bert, data = tiny_bert_dir(root), tiny_data_file(root)
    cfg = TrainConfig(text_encoder=str(bert), freeze_text_encoder=True, epochs=1, batch_size=16,
                      model_config={"layers": 1, "heads": 2}, device="cpu")
    train(cfg, load_dataset(data), root / "run", progress=False)
    return root, data


def test_plot_embeddings_and_maci(run, capsys):
    root, data = run
    main(["plot", "embeddings", "--run", str(root / "run"), "--data", str(data), "--rates", "0.1,0.5",
          "--method", "pca", "--out", str(root / "emb.png")])
    assert (root / "emb.png").read_bytes()[:4] == b"\x89PNG"
    main(["plot", "maci", "--run", str(root / "run"), "--data", str(data), "--index", "3", "--out", str(root / "m.png")])
    out = capsys.readouterr().out
    assert (root / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert "after_mcm" in out and "true class" in out
    from cider_mer.plots.maci import maci_steps

    steps = maci_steps(load_run(root / "run", device="cpu"), load_dataset(data), 3)
    for key in ("biased", "after_mcm", "after_cf"):
        assert abs(getattr(steps, key).sum() - 1) < 1e-5
    with pytest.raises(SystemExit) as e:
        main(["plot", "maci", "--run", str(root / "run"), "--data", str(data), "--index", "999"])
    assert e.value.code == 2
