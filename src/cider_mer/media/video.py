"""Per-frame facial geometry from MediaPipe's face mesh (``facemesh``, mediapipe 0.10.14).

Each decoded frame (all frames at the video's own rate, or a subsample with ``fps``) goes through
the legacy FaceMesh solution in tracking mode with iris refinement (478 landmarks, one face).
The landmarks are reduced to the 24 values of :data:`FACEMESH_NAMES`:

- coordinates are in pixels (x * width, y * height, z * width), centred on the midpoint of the
  outer eye corners (landmarks 33 and 263), rotated so that the eye line is horizontal (removes
  head roll) and divided by the 3-D distance between those corners (IOD);
- head pose angles are in radians; face position is a fraction of the image size; face scale is
  IOD / image width;
- distances are 3-D, in IOD units; eye openness is relative to the eye's own width; gaze is the
  iris centre's position along the eye (0 = image-left corner, 1 = image-right corner) and its
  vertical offset from the eye centre in eye widths.

A frame where no face is found is a row of zeros (no present frame is all zeros: its face scale
is positive) and stays inside the sequence length, so frame k is always at time k / rate.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import numpy as np

from cider_mer.media import MediaError
from cider_mer.media.decode import VideoReader, quiet_native_stderr, require

MEDIAPIPE_VERSION = "0.10.14"

FACEMESH_NAMES = (
    "head_roll", "head_yaw", "head_pitch",
    "face_x", "face_y", "face_scale",
    "eye_open_img_left", "eye_open_img_right",
    "brow_raise_img_left", "brow_raise_img_right", "brow_gap",
    "mouth_width", "mouth_open_inner", "mouth_open_outer",
    "mouth_corner_raise_img_left", "mouth_corner_raise_img_right",
    "nose_to_chin", "nose_width",
    "lid_to_mouth_corner_img_left", "lid_to_mouth_corner_img_right",
    "gaze_h_img_left", "gaze_v_img_left", "gaze_h_img_right", "gaze_v_img_right",
)

# Landmark indices of the MediaPipe face mesh (468 points + 10 iris points with refinement).
# "img_left" is the eye/side on the left of the image (the subject's right).
EYE_OUT_L, EYE_IN_L, EYE_IN_R, EYE_OUT_R = 33, 133, 362, 263
LID_UP_L, LID_LOW_L, LID_UP_R, LID_LOW_R = 159, 145, 386, 374
BROW_MID_L, BROW_MID_R, BROW_IN_L, BROW_IN_R = 105, 334, 107, 336
MOUTH_L, MOUTH_R, LIP_IN_UP, LIP_IN_LOW, LIP_OUT_UP, LIP_OUT_LOW = 61, 291, 13, 14, 0, 17
NOSE_TIP, CHIN, FOREHEAD, NOSE_WING_L, NOSE_WING_R = 1, 152, 10, 98, 327
IRIS_L, IRIS_R = 468, 473


def face_descriptor(landmarks: np.ndarray, width: int, height: int) -> Optional[np.ndarray]:
    """(24,) float32 descriptor from (478, 3) normalised landmarks; None if degenerate."""
    p = np.asarray(landmarks, dtype=np.float64) * np.array([width, height, width], dtype=np.float64)
    origin = (p[EYE_OUT_L] + p[EYE_OUT_R]) / 2.0
    eye_vec = p[EYE_OUT_R] - p[EYE_OUT_L]
    iod = float(np.linalg.norm(eye_vec))
    if not np.isfinite(iod) or iod <= 1e-6:
        return None
    roll = float(np.arctan2(eye_vec[1], eye_vec[0]))
    c, s = np.cos(-roll), np.sin(-roll)
    q = p - origin
    q = np.stack([c * q[:, 0] - s * q[:, 1], s * q[:, 0] + c * q[:, 1], q[:, 2]], axis=1) / iod

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(q[a] - q[b]))

    yaw = float(np.arctan2(q[EYE_OUT_R, 2] - q[EYE_OUT_L, 2], q[EYE_OUT_R, 0] - q[EYE_OUT_L, 0]))
    pitch = float(np.arctan2(q[CHIN, 2] - q[FOREHEAD, 2], q[CHIN, 1] - q[FOREHEAD, 1]))
    eye_w_l, eye_w_r = max(dist(EYE_OUT_L, EYE_IN_L), 1e-6), max(dist(EYE_IN_R, EYE_OUT_R), 1e-6)
    lip_mid_y = (q[LIP_IN_UP, 1] + q[LIP_IN_LOW, 1]) / 2.0

    def gaze(iris: int, left: int, right: int, width_: float) -> tuple[float, float]:
        axis = q[right, :2] - q[left, :2]
        h = float(np.dot(q[iris, :2] - q[left, :2], axis) / max(float(np.dot(axis, axis)), 1e-12))
        v = float((q[iris, 1] - (q[left, 1] + q[right, 1]) / 2.0) / width_)
        return h, v

    g_l = gaze(IRIS_L, EYE_OUT_L, EYE_IN_L, eye_w_l)
    g_r = gaze(IRIS_R, EYE_IN_R, EYE_OUT_R, eye_w_r)
    out = np.array([
        roll, yaw, pitch,
        origin[0] / width, origin[1] / height, iod / width,
        dist(LID_UP_L, LID_LOW_L) / eye_w_l, dist(LID_UP_R, LID_LOW_R) / eye_w_r,
        dist(BROW_MID_L, LID_UP_L), dist(BROW_MID_R, LID_UP_R), dist(BROW_IN_L, BROW_IN_R),
        dist(MOUTH_L, MOUTH_R), dist(LIP_IN_UP, LIP_IN_LOW), dist(LIP_OUT_UP, LIP_OUT_LOW),
        lip_mid_y - q[MOUTH_L, 1], lip_mid_y - q[MOUTH_R, 1],
        dist(NOSE_TIP, CHIN), dist(NOSE_WING_L, NOSE_WING_R),
        dist(LID_LOW_L, MOUTH_L), dist(LID_LOW_R, MOUTH_R),
        g_l[0], g_l[1], g_r[0], g_r[1],
    ], dtype=np.float32)
    return out if np.isfinite(out).all() else None


def _mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp = require("mediapipe")
    if getattr(mp, "__version__", MEDIAPIPE_VERSION) != MEDIAPIPE_VERSION or not hasattr(mp, "solutions"):
        raise MediaError(
            f"the facemesh features need mediapipe=={MEDIAPIPE_VERSION} (found {getattr(mp, '__version__', '?')}; "
            f"later versions do not bundle the face mesh model): pip install \"cider-mer[media]\""
        )
    return mp


def facemesh_features(path, fps: Optional[float] = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(T, 24) float32 features, (T,) bool face-present mask and the frame rate of a video file.

    Raises :class:`MediaError` naming the file when it has no frames or no face in any frame.
    """
    mp = _mediapipe()
    rows: list[np.ndarray] = []
    present: list[bool] = []
    zero = np.zeros(len(FACEMESH_NAMES), dtype=np.float32)
    with VideoReader(path, fps=fps) as reader:
        rate = reader.rate
        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                                   min_detection_confidence=0.5, min_tracking_confidence=0.5)
            try:
                for img in reader.frames():
                    h, w = img.shape[:2]
                    res = mesh.process(img)
                    desc = None
                    if res.multi_face_landmarks:
                        lms = res.multi_face_landmarks[0].landmark
                        desc = face_descriptor(np.array([(m.x, m.y, m.z) for m in lms]), w, h)
                    rows.append(zero if desc is None else desc)
                    present.append(desc is not None)
            finally:
                mesh.close()
    if not rows:
        raise MediaError(f"{path}: no video frames")
    mask = np.array(present, dtype=bool)
    if not mask.any():
        raise MediaError(f"{path}: no face found in any of its {len(rows)} frames")
    return np.stack(rows).astype(np.float32), mask, float(rate)
