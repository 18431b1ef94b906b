"""CSV importer and the default text encoder (offline)."""

import numpy as np
import pytest
import torch

from cider_mer.data.dataset import DatasetError, load_dataset
from cider_mer.data.import_csv import import_csv


@pytest.fixture(scope="module")
def tokenizer():
    from cider_mer.text.encoder import load_tokenizer

    return load_tokenizer()


def test_import_real_mosi(mosi_csv, tmp_path, tokenizer):
    out = tmp_path / "mosi.pkl"
    ds = import_csv(mosi_csv, out, tokenizer=tokenizer)
    assert [ds[s].n for s in ("train", "valid", "test")] == [1281, 229, 685]
    back = load_dataset(out)
    tr = back["train"]
    assert tr.text_bert.shape[1:] == (3, 50)
    assert np.all(tr.text_ids[:, 0] == 101)
    assert np.all(tr.audio_lengths == 0) and np.all(tr.vision_lengths == 0)  # absent modalities
    assert tr.raw_text[0] == "anyhow it was really good"
    assert tr.ids[0] == "03bSnISJMiM_1"
    assert abs(tr.regression_labels[0] - 2.4) < 1e-6 and tr.classification_labels[0] == 2


def test_import_mmsa_layout_and_features(tmp_path, tokenizer):
    csv = tmp_path / "label.csv"
    csv.write_text("video_id,clip_id,text,label,mode\n"
                   "v1,1,this is good,1.5,train\nv1,2,this is bad,-1.0,train\n"
                   "v2,1,meh,0.0,valid\nv3,1,great stuff,2.0,test\n")
    ids = np.array(["v1$_$1", "v3$_$1"])
    feats = np.random.default_rng(0).normal(size=(2, 6, 4)).astype(np.float32)
    np.savez(tmp_path / "audio.npz", ids=ids, features=feats, lengths=np.array([6, 3]))
    ds = import_csv(csv, tmp_path / "o.pkl", tokenizer=tokenizer, max_len=16, audio_features=tmp_path / "audio.npz")
    assert ds["train"].ids.tolist() == ["v1$_$1", "v1$_$2"]
    assert ds.audio_len == 6 and ds.audio_dim == 4
    assert ds["train"].audio_lengths.tolist() == [6, 0]
    assert np.allclose(ds["test"].audio[0, :3], feats[1, :3]) and np.all(ds["test"].audio[0, 3:] == 0)
    assert ds.vision_dim == 1 and ds["valid"].vision_lengths.tolist() == [0]


def test_import_bad_csv_messages(tmp_path, tokenizer):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text,score\na,b,1\n")
    with pytest.raises(DatasetError, match="expected columns id,text,label,mode"):
        import_csv(bad, tokenizer=tokenizer)
    bad.write_text("id,text,label,mode\na,b,7,train\n")
    with pytest.raises(DatasetError, match=r"row 2, column 'label'\]: expected a score in \[-3, 3\]"):
        import_csv(bad, tokenizer=tokenizer)
    bad.write_text("id,text,label,mode\na,b,1,holdout\n")
    with pytest.raises(DatasetError, match="column 'mode'"):
        import_csv(bad, tokenizer=tokenizer)


def test_default_minilm_offline_on_real_sentences(mosi_csv, monkeypatch):
    import pandas as pd

    from cider_mer.text.encoder import TextEncoder, load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = TextEncoder.from_pretrained(None, frozen=True)
    tok = load_tokenizer(None)
    assert enc.dim == 384 and enc.name == "all-MiniLM-L6-v2"
    texts = pd.read_csv(mosi_csv)["text"].astype(str).tolist()[:8]
    b = tok(texts, padding="max_length", max_length=50, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = enc(b["input_ids"], b["attention_mask"].float(), b["token_type_ids"])
    assert states.shape == (8, 50, 384)
    assert torch.isfinite(states).all()
    pad = b["attention_mask"] == 0
    assert torch.all(states[pad] == 0)  # padded positions come back as zeros
    # pre-trained, not random: a paraphrase is closer than an unrelated sentence
    b = tok(["the movie was really good", "the film was very nice", "i parked the car outside"],
            padding=True, return_tensors="pt")
    with torch.no_grad():
        s = enc(b["input_ids"], b["attention_mask"].float(), b["token_type_ids"])
    m = b["attention_mask"].unsqueeze(-1).float()
    e = torch.nn.functional.normalize((s * m).sum(1) / m.sum(1), dim=-1)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.1
