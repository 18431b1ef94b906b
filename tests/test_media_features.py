"""Feature extraction from media (``cider features extract``, ``import-csv --media-dir``).

Needs the ``media`` extra (skipped without it). The tests on real recordings use the two MOSI
clips in ``../shared/data/media`` and skip when they are absent.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import SHARED
from helpers import run_cli

pytest.importorskip("librosa")
pytest.importorskip("soundfile")
av = pytest.importorskip("av")
pytest.importorskip("mediapipe")

from cider_mer.cli import (  # noqa: E402
    app,
    feature_cmds,  # noqa: E402
    main,
)

MEDIA = SHARED / "data" / "media"
WAV = MEDIA / "03bSnISJMiM_1.wav"
MP4 = MEDIA / "Oz06ZWiO20M_6.mp4"
needs_clips = pytest.mark.skipif(not (WAV.is_file() and MP4.is_file()), reason="real media clips absent")

if not any(g.name == "features" for g in app.registered_groups):
    feature_cmds.register(app)


run = run_cli  # cider ARGV in-process: (exit code, stdout, stderr)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def write_black_video(path, frames: int = 8, rate: int = 10) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    if not (WAV.is_file() and MP4.is_file()):
        pytest.skip("real media clips absent")
    out = tmp_path_factory.mktemp("feats")
    try:
        main(["features", "extract", str(MEDIA), "--out", str(out), "--no-progress"])
    except SystemExit as exc:
        assert exc.code == 0
    with np.load(out / "audio.npz", allow_pickle=False) as a, np.load(out / "video.npz", allow_pickle=False) as v:
        return {k: a[k] for k in a.files}, {k: v[k] for k in v.files}


@needs_clips
def test_real_clips_frames_match_durations(extracted):
    import soundfile as sf

    audio, video = extracted
    assert audio["features"].dtype == np.float32 and audio["lengths"].dtype == np.int64
    assert np.isfinite(audio["features"]).all() and np.isfinite(video["features"]).all()
    assert audio["features"].shape[2] == 32 and video["features"].shape[2] == 24
    ids = list(audio["ids"])
    assert sorted(ids) == [WAV.stem, MP4.stem]
    # audio: 100 frames/s, centred frames: 1 + samples // 160 at 16 kHz
    wav_t = audio["lengths"][ids.index(WAV.stem)]
    assert abs(wav_t - 100 * sf.info(str(WAV)).duration) <= 1.5
    with av.open(str(MP4)) as c:
        a_stream, v_stream = c.streams.audio[0], c.streams.video[0]
        a_dur = float(a_stream.duration * a_stream.time_base)
        n_frames, fps = v_stream.frames, float(v_stream.average_rate)
    assert abs(audio["lengths"][ids.index(MP4.stem)] - 100 * a_dur) <= 2
    # video: every frame at the native rate; 225 frames at 30/s = 7.5 s
    assert list(video["ids"]) == [MP4.stem]
    assert video["lengths"][0] == n_frames == 225 and video["frame_rate"][0] == pytest.approx(fps)
    # padding is zeros
    k = ids.index(WAV.stem)
    assert not audio["features"][k, wav_t:].any() and audio["features"][k, :wav_t].any()


@needs_clips
def test_real_video_face_found_in_most_frames(extracted):
    _, video = extracted
    present = video["present"][0, : video["lengths"][0]]
    assert present.mean() > 0.9 and video["face_rate"][0] == pytest.approx(present.mean())
    feats = video["features"][0, : video["lengths"][0]]
    assert (np.abs(feats[present]).sum(axis=1) > 0).all() and not feats[~present].any()
    names = list(video["feature_names"])
    scale = feats[present, names.index("face_scale")]
    assert (scale > 0.02).all() and (scale < 1).all()
    eye = feats[present, names.index("eye_open_img_left")]
    assert 0 < np.median(eye) < 1


def test_text_file_named_mp4_exits_2(tmp_path, capsys):
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("this is text, not a video\n")
    code, _, err = run(["features", "extract", bad, "--out", tmp_path / "o", "--no-progress"], capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and str(bad) in lines[0]
    assert not (tmp_path / "o" / "video.npz").exists()


def test_empty_wav_exits_2(tmp_path, capsys):
    import soundfile as sf

    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), dtype=np.float32), 16000)
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    for path in (empty, zero):
        code, _, err = run(["features", "extract", path, "--out", tmp_path / "o", "--no-progress"], capsys)
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and str(path) in lines[0]


def test_video_without_face_exits_2(tmp_path, capsys):
    black = tmp_path / "black.mp4"
    write_black_video(black)
    code, out, err = run(["features", "extract", black, "--out", tmp_path / "o", "--no-progress"], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and str(black) in lines[0] and "no face" in lines[0]
    assert "no audio stream" in out  # a silent video: audio is missing, not an error


def test_video_subsampling(tmp_path):
    from cider_mer.media.decode import VideoReader

    black = tmp_path / "black.mp4"
    write_black_video(black, frames=10, rate=10)
    with VideoReader(black) as r:
        assert r.rate == 10 and len(list(r.frames())) == 10
    with VideoReader(black, fps=5) as r:
        assert r.rate == 5 and len(list(r.frames())) == 5


@needs_clips
def test_corrupt_file_among_good_ones(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    out_dir = tmp_path / "o"
    code, _, err = run(["features", "extract", WAV, bad, MP4, "--video", "none", "--out", out_dir, "--no-progress"],
                       capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and str(bad) in lines[0]
    assert "1 of 3 file(s) failed" in err and str(bad) in err.split("error:")[0]
    with np.load(out_dir / "audio.npz", allow_pickle=False) as z:
        assert sorted(z["ids"]) == [WAV.stem, MP4.stem] and np.isfinite(z["features"]).all()


def test_transcripts_matching_no_media_exit_2(tmp_path, capsys):
    media = tmp_path / "media"
    media.mkdir()
    write_black_video(media / "clipA.mp4")
    csv = tmp_path / "t.csv"
    csv.write_text("id,text,label,mode\nx_1,good,1.0,train\ny_1,bad,-1.0,valid\nz_1,fine,0.0,test\n")
    code, _, err = run(["data", "import-csv", csv, "--out", tmp_path / "d.pkl", "--media-dir", media], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and str(csv) in lines[0] and str(media) in lines[0]
    assert not (tmp_path / "d.pkl").exists()


@needs_clips
def test_import_csv_media_dir_end_to_end(tmp_path, capsys):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(WAV, media / WAV.name)
    shutil.copy(MP4, media / MP4.name)
    csv = tmp_path / "t.csv"
    csv.write_text(f"id,text,label,mode\n{WAV.stem},anyhow it was really good,2.4,train\n"
                   f"{MP4.stem},i did not like it much,-0.8,valid\nno_media_1,it was fine,0.0,test\n")
    data = tmp_path / "d.pkl"
    code, out, err = run(["data", "import-csv", csv, "--out", data, "--media-dir", media,
                          "--features-dir", tmp_path / "feats"], capsys)
    assert code == 0, err
    assert "1 of 3 ids" in out
    code, out, err = run(["data", "check", data], capsys)
    assert code == 0, err
    from cider_mer.data.dataset import load_dataset

    ds = load_dataset(data)
    s = ds.summary()
    assert s["audio_dim"] == 32 and s["vision_dim"] == 24
    assert s["splits"]["valid"]["vision_length"]["max"] == 225
    assert s["splits"]["test"]["audio_length"]["max"] == 0
    assert (tmp_path / "feats" / "audio.npz").is_file() and (tmp_path / "feats" / "video.npz").is_file()


def test_face_descriptor_ignores_roll_and_scale():
    from cider_mer.media.video import FACEMESH_NAMES, face_descriptor

    rng = np.random.default_rng(0)
    lm = rng.uniform(0.3, 0.7, size=(478, 3))
    lm[:, 2] *= 0.1
    base = face_descriptor(lm, 640, 480)
    ang, k = 0.3, 1.5
    c, s = np.cos(ang), np.sin(ang)
    px = lm * [640, 480, 640]
    centre = px.mean(axis=0)
    q = px - centre
    rot = np.stack([c * q[:, 0] - s * q[:, 1], s * q[:, 0] + c * q[:, 1], q[:, 2]], axis=1) * k + centre
    moved = face_descriptor(rot / [640, 480, 640], 640, 480)
    invariant = [i for i, n in enumerate(FACEMESH_NAMES) if n not in ("head_roll", "face_x", "face_y", "face_scale")]
    assert base.shape == (24,) and np.allclose(base[invariant], moved[invariant], atol=1e-4)
    assert moved[0] == pytest.approx(base[0] + ang, abs=1e-6)
    assert moved[5] == pytest.approx(base[5] * k, rel=1e-6)


def test_egemaps_kind(tmp_path, capsys):
    pytest.importorskip("opensmile")
    if not WAV.is_file():
        pytest.skip("real media clips absent")
    code, _, err = run(["features", "extract", WAV, "--audio", "egemaps", "--out", tmp_path, "--no-progress"], capsys)
    assert code == 0, err
    with np.load(tmp_path / "audio.npz", allow_pickle=False) as z:
        assert z["features"].shape[2] == 25 and np.isfinite(z["features"]).all()
        assert abs(int(z["lengths"][0]) - 100 * 3.33) <= 6
