"""Real files are messier than fixtures: containers that list more frames than their streams hold.

An AVI whose header is edited to list 28 frames while its stream holds 20 is what a real corpus
gives: it decodes fine up to its last frame. Such a file is "short", not broken, whenever a clip's
frames are there: clips come from the frames that are there, and the log says how many files
needed it. A file so short that no clip fits is still skipped.
"""
import logging
import struct

import ml_collections
import numpy as np
import pytest

from layerlock_jax.data import augment, decode, pipeline, video_files

T, S = 8, 32


def frames_for(vid, n, h=40, w=56):
  """Frame t of video vid: red = 20 + 5 t (frame counter), green = 40 + 40 vid, blue = 128."""
  out = np.empty((n, h, w, 3), np.uint8)
  for t in range(n):
    out[t, ..., 0], out[t, ..., 1], out[t, ..., 2] = 20 + 5 * t, 40 + 40 * vid, 128
  return out


def encode(path, frames, codec, rate=25):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path), "w") as c:
    s = c.add_stream(codec, rate=rate)
    s.height, s.width = frames.shape[1:3]
    s.pix_fmt, s.bit_rate = "yuv420p", 4_000_000
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def list_more_frames(path, listed):
  """Edits an AVI's headers (avih dwTotalFrames, strh dwLength) to list `listed` frames."""
  data = bytearray(path.read_bytes())
  i = data.index(b"avih")
  struct.pack_into("<I", data, i + 8 + 16, listed)
  j = data.index(b"strh")
  struct.pack_into("<I", data, j + 8 + 32, listed)
  path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  base = tmp_path_factory.mktemp("short")
  for c in ("a", "b", "c"):
    (base / c).mkdir()
  encode(base / "a" / "ok.mp4", frames_for(0, 24), "libx264")
  encode(base / "b" / "listed28.avi", frames_for(1, 20), "mpeg4")
  list_more_frames(base / "b" / "listed28.avi", 28)
  encode(base / "c" / "listed26.avi", frames_for(2, 18), "mpeg4")
  list_more_frames(base / "c" / "listed26.avi", 26)
  encode(base / "c" / "tiny.avi", frames_for(2, 5), "mpeg4")       # 5 frames: no clip fits
  list_more_frames(base / "c" / "tiny.avi", 26)
  return base


def cfg(path, **kw):
  c = ml_collections.ConfigDict()
  c.source, c.path, c.num_frames, c.image_size = "video_folder", str(path), T, S
  c.num_workers, c.prefetch, c.frame_stride = 0, 2, 1
  for k, v in kw.items():
    c[k] = v
  return c


def test_the_fixture_is_what_real_corpora_hold(folder):
  """The container lists 28 frames, a full decode yields 20 and no error."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(folder / "b" / "listed28.avi")) as c:
    stream = c.streams.video[0]
    assert stream.frames == 28
    assert sum(1 for _ in c.decode(stream)) == 20


def test_short_files_give_their_own_frames_and_are_counted(folder, caplog):
  caplog.set_level(logging.INFO)
  src = video_files.source_from_config(cfg(folder), "train", seed=0)
  assert len(src) == 4  # every file probes fine: 28, 26 and 26 listed frames >= T
  by_green = {}
  for i in range(len(src)):
    item = src[i]
    by_green.setdefault(int(round((item["video"][..., 1].mean() - 40) / 40)), []).append(
        int(item["label"]))
  # ok.mp4 (0) -> a, listed28.avi (1) -> b, listed26.avi (2) -> c; tiny.avi is replaced by its
  # successor (ok.mp4, wrapping around), so video 0 appears twice.
  assert by_green == {0: [0, 0], 1: [1], 2: [2]}
  for position in range(30):   # random windows: every frame comes from the stream's frames
    clip = src.training_item(position, 1, seed=0)["video"][0]
    t = [int(round((f[..., 0].mean() - 20) / 5)) for f in clip]
    assert t == list(range(t[0], t[0] + T)) and 0 <= t[0] and t[-1] < 20, t
  summary = src.bad_input.summary()
  assert set(summary["short"]) == {"b/listed28.avi", "c/listed26.avi"}
  frames, listed = summary["short"]["b/listed28.avi"]
  assert listed == 28 and T <= frames <= 20
  assert list(summary["bad"]) == ["c/tiny.avi"]
  assert summary["bad"]["c/tiny.avi"][1].startswith("too short")
  caplog.clear()
  metrics = pipeline.bad_input_metrics()
  assert metrics["data_short_files"] >= 2
  assert "hold fewer frames than their container lists" in caplog.text
  assert "b/listed28.avi: " in caplog.text


def test_load_clips_reports_short_streams(folder):
  spec = augment.ClipSpec(T, S, frame_stride=1, temporal_offset="center", crop="center")
  notes = {}
  clips = decode.load_clips(str(folder / "b" / "listed28.avi"), spec, np.random.default_rng(0),
                            notes=notes)
  assert clips.shape == (1, T, S, S, 3)
  assert notes["short"][1] == 28
  notes = {}
  decode.load_clips(str(folder / "a" / "ok.mp4"), spec, np.random.default_rng(0), notes=notes)
  assert notes == {}


@pytest.mark.slow
def test_folder_run_leaks_no_shared_memory(folder, tmp_path):
  """A folder job with a grain worker process ends without resource_tracker's warning about
  leaked shared_memory objects (the last batch's block used to outlive the program)."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo)
  cmd = [sys.executable, "-m", "layerlock_jax.main", "--config=configs/tiny.py",
         f"--workdir={tmp_path / 'wd'}", "--config.data.source=video_folder",
         f"--config.data.path={folder}", "--config.data.num_workers=1",
         "--config.data.num_frames=8", "--config.total_steps=2", "--config.batch_size=2",
         "--config.log_every=1", "--config.checkpoint_every=0",
         "--config.model.depth=1", "--config.model.decoder.depth=1"]
  proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 2/2" in proc.stderr
  assert "leaked shared_memory" not in proc.stderr, proc.stderr[-2000:]
  assert "hold fewer frames than their container lists" in proc.stderr
