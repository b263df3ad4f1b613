"""The camera-motion source: labels mean what they say, measured on the rendered pixels."""
import collections

import numpy as np
import pytest
from PIL import Image

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.data import camera_motion
from layerlock_jax.data import synthetic

SIZE, FRAMES = 64, 16


BRICK = [name for _, name in camera_motion.PHOTOS].index("brick.png")


def _find(source, **want):
  """The first clip index whose labels contain `want`. Brick walls are skipped: their mortar lines
  repeat every few pixels, so no frame-to-frame estimator can tell a shift from its period."""
  for i in range(len(source)):
    labels = source.labels(i)
    if int(labels["scene"]) != BRICK and all(int(labels[k]) == v for k, v in want.items()):
      return i
  raise AssertionError(f"no clip with {want}")


def _phase_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(row, col) translation taking grey image a to b, by phase correlation (an independent
  estimator: it knows nothing of how the clip was rendered)."""
  fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
  cross = fb * np.conj(fa)
  corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
  peak = np.array(np.unravel_index(np.argmax(corr), corr.shape), np.float64)
  n = np.array(corr.shape)
  return np.where(peak > n / 2, peak - n, peak)


@pytest.fixture(scope="module")
def source():
  return camera_motion.CameraMotion(600, FRAMES, SIZE, seed=3, split="train")


def test_clips_are_deterministic_uint8_and_carry_their_labels(source):
  a, b = source[5], camera_motion.CameraMotion(600, FRAMES, SIZE, seed=3, split="train")[5]
  assert a["video"].shape == (FRAMES, SIZE, SIZE, 3) and a["video"].dtype == np.uint8
  np.testing.assert_array_equal(a["video"], b["video"])
  assert {k: int(v) for k, v in source.labels(5).items()} == {
      k: int(a[k]) for k in camera_motion.CameraMotion.LABELS}
  other_seed = camera_motion.CameraMotion(600, FRAMES, SIZE, seed=4, split="train")[5]
  assert not np.array_equal(a["video"], other_seed["video"])
  # Photographic content everywhere: no large constant areas like Moving MNIST's background.
  assert a["video"].std() > 3


@pytest.mark.parametrize("direction", range(8))
def test_pan_moves_the_content_in_the_labelled_direction_and_speed(source, direction):
  for speed in range(3):
    clip = source[_find(source, motion=direction, speed=speed)]["video"].astype(np.float64)
    grey = clip.mean(-1)
    # Angle 0 = east (+col), counter-clockwise: 90 deg = north = towards row 0.
    step = camera_motion.CameraMotion.PAN_SPEEDS_PER_32PX[speed] * SIZE / 32
    angle = np.deg2rad(45 * direction)
    expected = np.array([-np.sin(angle), np.cos(angle)]) * step
    # Phase correlation of frames 0 and 3: the integer peak of a 3-step shift, divided by 3, is
    # within 1/6 px of the per-frame step (diagonal steps are not whole pixels).
    measured = _phase_shift(grey[0], grey[3]) / 3
    np.testing.assert_allclose(measured, expected, atol=0.25,
                               err_msg=f"direction {direction} speed {speed}")


@pytest.mark.parametrize("motion", [8, 9])
def test_zoom_in_enlarges_and_zoom_out_shrinks_the_content(source, motion):
  for speed in range(3):
    clip = source[_find(source, motion=motion, speed=speed)]["video"]
    scale = camera_motion.CameraMotion.ZOOM_RATES[speed] ** (FRAMES - 1)
    wide, close = (clip[0], clip[-1]) if motion == 8 else (clip[-1], clip[0])
    # The close-up shows the central 1/scale of the wide view, enlarged. Rebuild it from the wide
    # view with Pillow and compare; the opposite hypothesis (the wide view is the enlargement)
    # must fit worse.
    side = SIZE / scale
    box = ((SIZE - side) / 2, (SIZE - side) / 2, (SIZE + side) / 2, (SIZE + side) / 2)
    predicted = np.asarray(Image.fromarray(wide).resize((SIZE, SIZE), Image.Resampling.BILINEAR,
                                                        box=box), np.float64)
    opposite = np.asarray(Image.fromarray(close).resize((SIZE, SIZE), Image.Resampling.BILINEAR,
                                                        box=box), np.float64)
    err = np.abs(predicted - close).mean()
    err_opposite = np.abs(opposite - wide).mean()
    assert err < 0.5 * err_opposite, (motion, speed, err, err_opposite)
    assert err < 6.0, (motion, speed, err)


def test_labels_are_balanced_and_splits_differ():
  src = camera_motion.CameraMotion(3000, FRAMES, SIZE, seed=0, split="train")
  for name, n in camera_motion.CameraMotion.LABELS.items():
    counts = collections.Counter(int(src.labels(i)[name]) for i in range(len(src)))
    assert sorted(counts) == list(range(n)), name
    expected = len(src) / n
    assert all(abs(c - expected) < 0.3 * expected for c in counts.values()), (name, counts)
  test = camera_motion.CameraMotion(50, FRAMES, 32, seed=0, split="test")
  train = camera_motion.CameraMotion(50, FRAMES, 32, seed=0, split="train")
  assert not np.array_equal(test[0]["video"], train[0]["video"])


def test_registered_as_a_config_source_and_bad_arguments_fail_clearly():
  cfg = config_defaults.base_config().data
  cfg.source, cfg.num_clips, cfg.num_frames, cfg.image_size = "camera_motion", 8, 8, 32
  src = synthetic.make_source(cfg, "test", 1)
  assert isinstance(src, camera_motion.CameraMotion) and src[0]["video"].shape == (8, 32, 32, 3)
  with pytest.raises(ValueError, match="at most .* frames"):
    camera_motion.CameraMotion(4, 64, 32, 0, "train")
  with pytest.raises(ValueError, match="split"):
    camera_motion.CameraMotion(4, 8, 32, 0, "val")
