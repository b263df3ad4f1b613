"""Real video input: PyAV-encoded fixtures, folder/ArrayRecord/TFDS sources, converter, pipeline.

Every fixture video is written here with PyAV's encoders (several codecs and containers, odd sizes,
varying frame rates), so the expected pixels are known: frame t of video `vid` has
R = 20 + 5 t (a per-frame level), G = a left-to-right ramp (shows flips) and B = a top-to-bottom
ramp offset by `vid`. Broken inputs (truncated, empty, text named .mp4, audio-only, too short) are
made from real files. Checks compare decoded pixels with the encoded arrays within codec
tolerance and identify clips by their content or label, never by calling the code under test twice.
"""
import json
import re
import logging
import os
import shutil
import subprocess
import sys

import av
import ml_collections
import numpy as np
import pytest

from layerlock_jax.data import augment, decode, pipeline, records, synthetic, video_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, S = 8, 32  # clip frames and size used by most tests
R0, DR = 20, 5  # red level of frame t: R0 + DR * t (<= 255 for the 44-frame fixture)


def frames_for(vid: int, n: int, h: int, w: int) -> np.ndarray:
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  out = np.empty((n, h, w, 3), np.uint8)
  for t in range(n):
    out[t, ..., 0] = R0 + DR * t
    out[t, ..., 1] = np.rint(30 + 170 * x / (w - 1))
    out[t, ..., 2] = np.rint(10 + 8 * vid + 90 * y / (h - 1))
  return out


def encode(path, frames, codec="libx264", pix_fmt="yuv420p", rate=25, fmt=None):
  with av.open(str(path), "w", format=fmt) as c:
    s = c.add_stream(codec, rate=rate)
    s.height, s.width = frames.shape[1:3]
    s.pix_fmt = pix_fmt
    s.bit_rate = 4_000_000  # ample for 40x56: the defaults of mpeg4 smear the per-frame levels
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  return frames


# (codec, extension, pix_fmt, height, width, rate, mean abs error tolerance). libx264 needs even
# sizes with 4:2:0 chroma, so the odd sizes use the other codecs or 4:4:4.
CODECS = [
    ("libx264", "mp4", "yuv420p", 40, 56, 25, 6.0),
    ("mpeg4", "avi", "yuv420p", 41, 57, 30, 10.0),
    ("libvpx-vp9", "webm", "yuv420p", 41, 57, 24, 6.0),
    ("mjpeg", "mkv", "yuvj420p", 45, 61, 15, 8.0),
    ("ffv1", "mkv", "yuv444p", 41, 57, 25, 1.5),
    ("libx264", "mov", "yuv444p", 37, 53, 50, 4.0),
]


def audio_only(path):
  with av.open(str(path), "w") as c:
    s = c.add_stream("aac", rate=16000)
    for _ in range(10):
      fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                      layout="mono")
      fr.sample_rate = 16000
      for p in s.encode(fr):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def data_cfg(source, path, **kw):
  c = ml_collections.ConfigDict()
  c.source, c.path, c.num_frames, c.image_size = source, str(path), T, S
  c.num_clips, c.num_workers, c.prefetch = 0, 0, 2
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """good/: one class folder per codec (label = codec index); mixed/: good + broken files;
  ids/: 10 clean videos, each alone in class folder vNN so the label identifies the record."""
  base = tmp_path_factory.mktemp("videos")
  refs = {}
  for i, (codec, ext, pix, h, w, rate, _) in enumerate(CODECS):
    d = base / "good" / f"c{i}"
    d.mkdir(parents=True)
    refs[i] = encode(d / f"v.{ext}", frames_for(i, 24 + 4 * i, h, w), codec, pix, rate)
  mixed = base / "mixed"
  shutil.copytree(base / "good", mixed)
  bad = mixed / "c0"
  data = (base / "good" / "c0" / "v.mp4").read_bytes()
  (bad / "cut.mp4").write_bytes(data[: len(data) // 2])          # moov atom lost: unreadable
  avi = (base / "good" / "c1" / "v.avi").read_bytes()
  (bad / "cut.avi").write_bytes(avi[: int(len(avi) * 0.8)])     # opens, stream ends early
  (bad / "empty.mp4").write_bytes(b"")
  (bad / "notes.mp4").write_text("not a video\n" * 50)
  audio_only(bad / "sound.mp4")
  encode(bad / "short.mp4", frames_for(9, T - 3, 40, 56))        # fewer frames than a clip
  (bad / "readme.txt").write_text("ignored: no video extension")
  ids = base / "ids"
  for v in range(10):
    (ids / f"v{v:02d}").mkdir(parents=True)
    encode(ids / f"v{v:02d}" / "x.mp4", frames_for(v, 20 + v, 40, 56))
  return {"base": base, "good": base / "good", "mixed": mixed, "ids": ids, "refs": refs}


# ------------------------------------------------------------------------------------------------
# Decoding.


@pytest.mark.parametrize("i", range(len(CODECS)), ids=[f"{c[0]}-{c[1]}" for c in CODECS])
def test_decoded_frames_match_what_was_encoded(folders, i):
  codec, ext, _, h, w, _, tol = CODECS[i]
  ref = folders["refs"][i]
  path = folders["good"] / f"c{i}" / f"v.{ext}"
  for src in (str(path), path.read_bytes()):
    video = decode.decode_video(src, limit=1000)
    assert (video.num_frames, video.height, video.width) == ref.shape[:3]
    got = np.stack([video.rgb(t) for t in range(video.num_frames)]).astype(np.int64)
    assert np.abs(got - ref).mean() < tol, codec
    # Frame order and no duplicates: the per-frame red level identifies each frame.
    levels = got[..., 0].mean(axis=(1, 2))
    nearest = np.abs(levels[:, None] - (R0 + DR * np.arange(len(ref)))[None]).argmin(axis=1)
    np.testing.assert_array_equal(nearest, np.arange(len(ref)))


def test_decode_limit_and_frames_array_input(folders):
  ref = folders["refs"][0]
  assert decode.decode_video(str(folders["good"] / "c0" / "v.mp4"), limit=5).num_frames == 5
  arr = decode.decode_video(ref, limit=1000)
  np.testing.assert_array_equal(arr.rgb(3), ref[3])
  for bad in (ref.astype(np.float32), ref[..., :2], np.zeros((0, 4, 4, 3), np.uint8)):
    with pytest.raises(decode.BadVideoError):
      decode.decode_video(bad, limit=10)


def test_bad_files_raise_bad_video_error_with_reason(folders):
  bad = folders["mixed"] / "c0"
  expect = {"cut.mp4": "unreadable", "cut.avi": "truncated", "empty.mp4": "empty",
            "notes.mp4": "unreadable", "sound.mp4": "no video stream"}
  for name, kind in expect.items():
    with pytest.raises(decode.BadVideoError) as err:
      decode.decode_video(str(bad / name), limit=1000)
    assert err.value.reason.startswith(kind), (name, err.value.reason)


# ------------------------------------------------------------------------------------------------
# Sampling and augmentation.


def test_frame_indices_stride_offset_and_short_videos():
  spec = augment.ClipSpec(num_frames=4, image_size=8, frame_stride=3, temporal_offset="center")
  # Span 10 of 20 frames, centred: frames 5..14 (centre 9.5 like the video's).
  np.testing.assert_array_equal(augment.frame_indices(20, spec, None), [5, 8, 11, 14])
  # Shorter than the 10-frame span: largest stride that fits, (8 - 1) // 3 = 2, centred.
  np.testing.assert_array_equal(augment.frame_indices(8, spec, None), [0, 2, 4, 6])
  np.testing.assert_array_equal(augment.frame_indices(4, spec, None), [0, 1, 2, 3])
  with pytest.raises(augment.TooShortError):
    augment.frame_indices(3, spec, None)
  rnd = augment.ClipSpec(num_frames=4, image_size=8, frame_stride=3)
  rng = np.random.default_rng(0)
  starts = [augment.frame_indices(20, rnd, rng)[0] for _ in range(400)]
  assert set(starts) == set(range(11))  # every start in [0, 20 - 10] occurs, none outside
  idx = augment.frame_indices(20, rnd, rng)
  np.testing.assert_array_equal(np.diff(idx), [3, 3, 3])


def test_crop_boxes_respect_scale_aspect_and_bounds():
  spec = augment.ClipSpec(num_frames=1, image_size=8, crop_scale=(0.2, 0.6),
                          crop_aspect=(0.5, 2.0))
  rng = np.random.default_rng(1)
  for _ in range(300):
    b = augment.crop_box(90, 160, spec, rng)
    assert 0 <= b.top and b.top + b.height <= 90 and 0 <= b.left and b.left + b.width <= 160
    area = b.height * b.width / (90 * 160)
    assert 0.17 < area < 0.64 and 0.45 < b.width / b.height < 2.2
  center = augment.crop_box(90, 160, augment.ClipSpec(1, 8, crop="center"), rng)
  assert center == augment.Box(0, 35, 90, 90)


def test_render_crop_resize_flip_against_references():
  rng = np.random.default_rng(2)
  frames = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
  box = augment.Box(2, 5, 16, 16)
  # No resize needed: an exact slice.
  np.testing.assert_array_equal(augment.render(frames, box, 16, False), frames[:, 2:18, 5:21])
  np.testing.assert_array_equal(augment.render(frames, box, 16, True),
                                frames[:, 2:18, 5:21][:, :, ::-1])
  # A linear ramp stays the same ramp under a (symmetric, normalised) bilinear resize, sampled at
  # the output pixel centres; checked away from the borders where the filter is clipped.
  y, x = np.mgrid[0:40, 0:60].astype(np.float64)
  ramp = np.repeat((2 * x + 3 * y)[None, ..., None], 3, axis=-1)
  out = augment.render(np.rint(ramp).astype(np.uint8), augment.Box(0, 0, 40, 60), 20,
                       False).astype(np.float64)
  j = np.arange(20)
  cy, cx = (j + 0.5) * 2 - 0.5, (j + 0.5) * 3 - 0.5
  want = 2 * cx[None, :] + 3 * cy[:, None]
  assert np.abs(out[0, 2:-2, 2:-2, 0] - want[2:-2, 2:-2]).max() <= 0.51
  const = np.full((2, 33, 47, 3), 77, np.uint8)
  assert (augment.render(const, augment.Box(3, 4, 25, 31), 16, True) == 77).all()


# ------------------------------------------------------------------------------------------------
# Folder source.


def test_folder_source_labels_variable_sizes_and_real_content(folders):
  src = video_files.VideoFolderSource(str(folders["good"]), "train",
                                      augment.ClipSpec(T, S, frame_stride=2))
  assert len(src) == len(CODECS) and src.LABELS == {"label": len(CODECS)}
  assert src.class_names == [f"c{i}" for i in range(len(CODECS))]
  for i in range(len(CODECS)):
    item = src[i]
    assert item["video"].shape == (T, S, S, 3) and item["video"].dtype == np.uint8
    assert item["label"] == i
    # Evaluation clip = centred window at stride 2 and the centred square, resized: compare with
    # the same operations applied to the ENCODED frames (independent of any decoding).
    ref = folders["refs"][i]
    n, h, w = ref.shape[:3]
    start = (n - (2 * (T - 1) + 1)) // 2
    side = min(h, w)
    crop = ref[start:start + 2 * T:2, (h - side) // 2:(h - side) // 2 + side,
               (w - side) // 2:(w - side) // 2 + side].astype(np.float64)
    got = item["video"].astype(np.float64)
    # Red: one level per frame; blue: the vertical ramp through the centred square.
    np.testing.assert_allclose(got[..., 0].mean(axis=(1, 2)), crop[..., 0].mean(axis=(1, 2)),
                               atol=3)
    np.testing.assert_allclose(got[..., 2].mean(axis=(0, 2)), np.interp(
        (np.arange(S) + 0.5) * side / S - 0.5, np.arange(side), crop[..., 2].mean(axis=(0, 2))),
        atol=6)
    assert got.std() > 10  # a real picture, not a flat/black clip


def test_mixed_folder_skips_and_reports_bad_files(folders, caplog):
  caplog.set_level(logging.INFO)
  cfg = data_cfg("video_folder", folders["mixed"])
  src = synthetic.make_source(cfg, "train", 0)
  scan_skipped = {"c0/cut.mp4", "c0/empty.mp4", "c0/notes.mp4", "c0/sound.mp4", "c0/short.mp4"}
  # cut.avi survives the probe (its header is intact); its stream ends before the frame count
  # the header lists, but holds enough frames for a clip: it is served from those, as "short".
  assert len(src) == len(CODECS) + 1
  log = caplog.text
  for name in scan_skipped:
    assert name in log
  assert "readme.txt" in log and "cut.avi" not in log
  summary = src.bad_input.summary()["bad"]
  assert set(summary) == scan_skipped
  assert summary["c0/short.mp4"][1].startswith("too short")
  names = [src.read_record(i).name for i in range(len(src))]  # pylint: disable=protected-access
  cut = names.index("c0/cut.avi")
  a, b = src[cut], src[cut + 1]
  assert a["label"] == b["label"] == 0
  # Its own pixels (the c1 fixture, whose blue ramp starts at 10 + 8), not its successor's.
  assert not np.array_equal(a["video"], b["video"])
  assert abs(float(a["video"][..., 2].min()) - 18) < 12
  summary = src.bad_input.summary()
  assert set(summary["bad"]) == scan_skipped
  frames, listed = summary["short"]["c0/cut.avi"]
  assert T <= frames < listed == 28
  assert summary["replaced"] == 0
  caplog.clear()
  metrics = pipeline.bad_input_metrics()
  assert metrics["data_skipped_files"] >= 5 and metrics["data_short_files"] >= 1
  assert "fewer frames than their container lists" in caplog.text and "c0/cut.avi" in caplog.text


def test_folder_without_usable_video_is_one_clear_error(folders, tmp_path):
  for name in ("empty.mp4", "notes.mp4", "sound.mp4", "readme.txt"):
    shutil.copy(folders["mixed"] / "c0" / name, tmp_path / name)
  with pytest.raises(video_files.NoUsableVideoError) as err:
    synthetic.make_source(data_cfg("video_folder", tmp_path), "train", 0)
  msg = str(err.value)
  assert "no usable video" in msg and "notes.mp4" in msg and "sound.mp4" in msg
  empty = tmp_path / "nothing"
  empty.mkdir()
  with pytest.raises(video_files.NoUsableVideoError, match="no file with a video extension"):
    synthetic.make_source(data_cfg("video_folder", empty), "train", 0)


def test_labels_csv_and_split_folders(folders, tmp_path):
  flat = tmp_path / "flat"
  flat.mkdir()
  for v in range(3):
    shutil.copy(folders["ids"] / f"v{v:02d}" / "x.mp4", flat / f"{v}.mp4")
  (tmp_path / "labels.csv").write_text("path,label\n0.mp4,zebra\n1.mp4,ant\n")
  csv_cfg = data_cfg("video_folder", flat, labels_csv=str(tmp_path / "labels.csv"))
  src = synthetic.make_source(csv_cfg, "train", 0)
  assert len(src) == 2 and src.class_names == ["ant", "zebra"]
  assert [src[i]["label"] for i in range(2)] == [1, 0]
  assert src.bad_input.summary()["bad"] == {"2.mp4": ("scan", "no label in labels_csv")}
  unlabelled = synthetic.make_source(data_cfg("video_folder", flat), "train", 0)
  assert unlabelled.LABELS == {} and set(unlabelled[0]) == {"video"}
  # train/ and test/ share one class numbering even when test lacks a class.
  for split, classes in (("train", ("a", "b")), ("test", ("b",))):
    for cls in classes:
      (tmp_path / "sp" / split / cls).mkdir(parents=True)
      shutil.copy(folders["ids"] / "v00" / "x.mp4", tmp_path / "sp" / split / cls / "x.mp4")
  test_src = synthetic.make_source(data_cfg("video_folder", tmp_path / "sp"), "test", 0)
  assert len(test_src) == 1 and test_src.class_names == ["a", "b"] and test_src[0]["label"] == 1


# ------------------------------------------------------------------------------------------------
# Pipeline.


def _labels(it, steps):
  return [next(it)["label"].tolist() for _ in range(steps)]


def test_pipeline_same_seed_same_clips_and_multi_clip_batches(folders):
  cfg = data_cfg("video_folder", folders["ids"], clips_per_video=2)
  mk = lambda seed: pipeline.make_train_iterator(cfg, seed=seed, global_batch_size=4,
                                                 process_index=0, process_count=1)
  a, b, c = mk(5), mk(5), mk(6)
  for _ in range(3):
    x, y, z = next(a), next(b), next(c)
    assert x["video"].shape == (4, T, S, S, 3) and x["label"].shape == (4,)
    np.testing.assert_array_equal(x["video"], y["video"])
    np.testing.assert_array_equal(x["label"], y["label"])
    # Two clips per decoded video, adjacent, independently augmented.
    assert x["label"][0] == x["label"][1] and x["label"][2] == x["label"][3]
    assert not np.array_equal(x["video"][0], x["video"][1])
    assert not np.array_equal(x["video"], z["video"])
  with pytest.raises(ValueError, match="clips_per_video"):
    pipeline.make_train_iterator(data_cfg("video_folder", folders["ids"], clips_per_video=3),
                                 seed=0, global_batch_size=4, process_index=0, process_count=1)


def test_process_shards_disjoint_and_covering(folders):
  cfg = data_cfg("video_folder", folders["ids"])
  per_proc = [sum(_labels(pipeline.make_train_iterator(
      cfg, seed=3, global_batch_size=4, process_index=p, process_count=2), 5), [])
      for p in range(2)]
  # 5 steps x 2 clips per process = 20 = two epochs of the 10 records; labels identify records.
  # Process p reads a contiguous block of 2 records of every global batch of 4: its m-th record
  # is global stream position (m // 2) * 4 + 2 p + m % 2.
  stream = [None] * 20
  for p in range(2):
    for m, lab in enumerate(per_proc[p]):
      stream[(m // 2) * 4 + 2 * p + m % 2] = lab
  for epoch in (stream[:10], stream[10:]):
    assert sorted(epoch) == list(range(10))  # disjoint within an epoch, and covering
  assert stream[:10] != stream[10:]          # reshuffled between epochs
  single = sum(_labels(pipeline.make_train_iterator(cfg, seed=3, global_batch_size=4,
                                                    process_index=0, process_count=1), 5), [])
  assert single == stream


def test_iterator_state_resumes_exactly(folders):
  cfg = data_cfg("video_folder", folders["mixed"])
  mk = lambda: pipeline.make_train_iterator(cfg, seed=1, global_batch_size=4, process_index=0,
                                            process_count=1)
  it = mk()
  for _ in range(2):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  want = [next(it) for _ in range(2)]
  other = mk()
  other.set_state(state)
  for w in want:
    got = next(other)
    np.testing.assert_array_equal(got["video"], w["video"])
    np.testing.assert_array_equal(got["label"], w["label"])


def test_worker_processes_decode_and_report_skips(folders, tmp_path):
  # cut.avi is found short only when decoded, i.e. inside the worker process; its name must
  # still reach the main process's metrics.
  mixed = tmp_path / "m"
  shutil.copytree(folders["mixed"], mixed)
  cfg = data_cfg("video_folder", mixed, num_workers=1)
  it = pipeline.make_train_iterator(cfg, seed=0, global_batch_size=8, process_index=0,
                                    process_count=1)
  seen = set()
  for _ in range(3):  # 24 clips over 7 records: every record is drawn
    batch = next(it)
    assert batch["video"].shape == (8, T, S, S, 3)
    assert (batch["video"].reshape(8, -1).std(axis=1) > 5).all()  # no blank clip
    seen.update(batch["label"].tolist())
  assert seen == set(range(len(CODECS)))
  it.close()
  bad, short = {}, {}
  for log in video_files._LOGS:  # pylint: disable=protected-access
    if str(mixed) in log.source_name:
      bad.update(log.summary()["bad"])
      short.update(log.summary()["short"])
  assert "c0/cut.avi" in short and "c0/cut.avi" not in bad


# ------------------------------------------------------------------------------------------------
# Shards and TFDS.


def test_convert_round_trip_matches_folder(folders, tmp_path):
  out = tmp_path / "shards"
  report = __import__("layerlock_jax.data.convert", fromlist=["x"]).convert_folder(
      str(folders["mixed"]), str(out), num_shards=3, workers=2, min_frames=T, log=lambda s: None)
  train = report["splits"]["train"]
  assert train["converted"] == len(CODECS)
  assert set(train["skipped_files"]) == {"c0/cut.mp4", "c0/cut.avi", "c0/empty.mp4",
                                         "c0/notes.mp4", "c0/sound.mp4", "c0/short.mp4"}
  shards = sorted(os.listdir(out))
  assert [s for s in shards if ".array_record" in s] == [
      records.shard_name("train", i, 3) for i in range(3)]
  meta = json.loads((out / "metadata.json").read_text())
  assert meta["class_names"] == [f"c{i}" for i in range(len(CODECS))]
  frames = sum((meta["shards"][records.shard_name("train", i, 3)]["num_frames"]
                for i in range(3)), [])
  assert frames == [len(folders["refs"][i]) for i in range(len(CODECS))]
  # Records hold the original bytes.
  rec = records.ArrayRecordSource(str(out), "train", augment.ClipSpec(T, S))
  header, data = records.decode_record(rec.raw_records[0])
  assert data == (folders["good"] / "c0" / "v.mp4").read_bytes() and header["label"] == 0
  # Same records as the clean folder, in the same order: identical clips, eval and training.
  folder = video_files.VideoFolderSource(str(folders["good"]), "train", augment.ClipSpec(T, S))
  assert len(rec) == len(folder) and rec.LABELS == folder.LABELS
  for i in range(len(rec)):
    np.testing.assert_array_equal(rec[i]["video"], folder[i]["video"])
    a, b = rec.training_item(11, i, 4), folder.training_item(11, i, 4)
    np.testing.assert_array_equal(a["video"], b["video"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # A glob pattern works too, and a longer clip than some records skips them up front.
  pattern = data_cfg("array_record", str(out / "{split}.array_record-*"), num_frames=30)
  long = synthetic.make_source(pattern, "train", 0)
  assert len(long) == sum(f >= 30 for f in frames)


def test_corrupt_record_is_replaced(folders, tmp_path):
  from array_record.python import array_record_module
  path = str(tmp_path / "train.array_record-00000-of-00001")
  w = array_record_module.ArrayRecordWriter(path, "group_size:1")
  good = (folders["good"] / "c0" / "v.mp4").read_bytes()
  w.write(records.encode_record(good, name="ok", label=None))
  w.write(records.encode_record(good[:300], name="broken", label=None, num_frames=24))
  w.write(b"LLV1\xff\xff\xff\xff")
  w.close()
  src = synthetic.make_source(data_cfg("array_record", tmp_path), "train", 0)
  for i in range(3):
    assert src[i]["video"].std() > 10
  np.testing.assert_array_equal(src[1]["video"], src[0]["video"])  # wraps to record 0
  bad = src.bad_input.summary()["bad"]
  assert set(bad) == {"broken (record 1)", "record 2"}


def test_convert_cli_progress_summary_and_exit_codes(folders, tmp_path):
  run = lambda *args: subprocess.run(
      [sys.executable, "-m", "layerlock_jax.data.convert", *args], cwd=REPO, text=True,
      capture_output=True, timeout=120)
  out = tmp_path / "s"
  r = run(f"--input={folders['mixed']}", f"--output={out}", "--workers=1", f"--min_frames={T}",
          "--runner=processes")
  assert r.returncode == 0, r.stderr
  assert re.search(r"inspected 12/12 \(\d+ failed this run\) .* files/s, ETA \d+s", r.stdout)
  assert "skipped c0/notes.mp4: unreadable" in r.stdout
  # Beam is in the test extra, so the default runner is Beam's DirectRunner: it reports once, at
  # the end of the inspection, and writes the same records.
  beam = run(f"--input={folders['mixed']}", f"--output={tmp_path / 'beam'}", f"--min_frames={T}")
  assert beam.returncode == 0, beam.stderr
  assert beam.stdout.startswith("runner: DirectRunner")
  assert re.search(r"inspected 12 file\(s\) on DirectRunner in \d+s", beam.stdout)
  assert "skipped c0/notes.mp4: unreadable" in beam.stdout and "done: 6 video(s)" in beam.stdout
  assert "skipped c0/short.mp4: too short" in r.stdout and "done: 6 video(s)" in r.stdout
  assert run(f"--input={folders['mixed']}", f"--output={out}").returncode == 2  # no --overwrite
  only_bad = tmp_path / "bad"
  only_bad.mkdir()
  shutil.copy(folders["mixed"] / "c0" / "notes.mp4", only_bad)
  r = run(f"--input={only_bad}", f"--output={tmp_path / 'o'}", "--workers=1")
  assert r.returncode == 1 and "no usable video" in r.stderr


def test_tfds_data_source_without_tensorflow(folders, tmp_path):
  import tensorflow_datasets as tfds

  paths = [folders["ids"] / f"v{v:02d}" / "x.mp4" for v in range(3)]

  class TinyVideos(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    # A builder defined in a test module (not a package): point TFDS's metadata lookup (README,
    # citations) at an empty folder instead of at a package that does not exist.
    pkg_dir_path = tmp_path

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "video": tfds.features.Tensor(shape=(), dtype=np.object_),
          "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for v, p in enumerate(paths):
        yield v, {"video": p.read_bytes(), "label": v}

  builder = TinyVideos(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare()
  src = synthetic.make_source(data_cfg("tfds", builder.data_dir), "train", 0)
  folder = video_files.VideoFolderSource(str(folders["ids"]), "train", augment.ClipSpec(T, S))
  assert len(src) == 3 and src.LABELS == {"label": 3}
  for v in range(3):
    item = src[v]
    assert item["label"] == v
    np.testing.assert_array_equal(item["video"], folder[v]["video"])
  it = pipeline.make_train_iterator(data_cfg("tfds", builder.data_dir), seed=0,
                                    global_batch_size=3, process_index=0, process_count=1)
  assert sorted(next(it)["label"].tolist()) == [0, 1, 2]


@pytest.mark.slow
def test_pretraining_runs_on_a_mixed_folder(folders, tmp_path, caplog):
  """The entry point's training loop on real files, broken ones included (a shrunken tiny.py)."""
  from layerlock_jax.config import loading as config_loading  # pylint: disable=g-import-not-at-top
  from layerlock_jax import train  # pylint: disable=g-import-not-at-top
  config = config_loading.load_config(os.path.join(REPO, "configs", "tiny.py"))
  config.total_steps, config.log_every, config.checkpoint_every = 3, 1, 0
  config.batch_size = 8  # one clip per forced CPU device (conftest)
  config.model.width, config.model.depth, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads = config.model.decoder.num_heads = 2
  config.model.decoder.width, config.model.decoder.mlp_dim = 32, 64
  config.data.source, config.data.path = "video_folder", str(folders["mixed"])
  config.data.num_frames = T
  caplog.set_level(logging.INFO)
  train.run(config, str(tmp_path / "wd"))
  lines = [json.loads(l) for l in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines] == [1, 2, 3]
  assert all(np.isfinite(r["loss"]) for r in lines)
  for name in ("c0/notes.mp4", "c0/sound.mp4", "c0/cut.mp4", "c0/empty.mp4", "c0/short.mp4"):
    assert name in caplog.text
