"""Seek-based decoding: clips planned first, decoded from the preceding keyframe only.

Fixtures are written here with PyAV at controlled keyframe intervals (long GOPs, B-frames, odd
frame rates, non-zero start times) in several codecs. The reference for every check is a plain
sequential decode of the whole file (decode.decode_video), never the seek path itself.
"""
import fractions
import os
import io

import av
import numpy as np
import pytest

from layerlock_jax.data import augment, decode

H, W = 64, 96


def textured(n, h=H, w=W, seed=0, period=5.0):
  """Frames that differ everywhere from frame to frame (a drifting texture + a frame counter)."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  out = np.empty((n, h, w, 3), np.uint8)
  for t in range(n):
    phase = (x * np.cos(seed) + y * np.sin(seed)) / period + 0.35 * t
    out[t, ..., 0] = 128 + 100 * np.sin(phase)
    out[t, ..., 1] = (20 + 4 * t) % 256
    out[t, ..., 2] = 128 + 100 * np.cos(0.7 * phase)
  return out


def encode(path, frames, codec, gop, rate=25, options=None, start_pts=0, container_options=None):
  with av.open(str(path), "w", options=container_options or {}) as c:
    s = c.add_stream(codec, rate=rate)
    s.height, s.width = frames.shape[1:3]
    s.pix_fmt = "yuv420p"
    s.gop_size = gop
    s.bit_rate = 2_000_000
    if options:
      s.options = options
    for t, f in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(f, format="rgb24")
      frame.pts = start_pts + t
      for p in s.encode(frame):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


# (name, codec, extension, keyframe interval, rate, encoder options, start pts)
FILES = [
    ("h264_bframes", "libx264", "mp4", 40, 25, {"bf": "3", "sc_threshold": "0"}, 0),
    ("h264_ntsc_offset", "libx264", "mkv", 33, fractions.Fraction(30000, 1001),
     {"bf": "2", "sc_threshold": "0"}, 17),
    ("mpeg4_avi", "mpeg4", "avi", 25, 30, {"bf": "2"}, 0),
    ("mpeg2_ts", "mpeg2video", "ts", 30, 24, {"bf": "2"}, 5),
    ("vp9_webm", "libvpx-vp9", "webm", 45, 24, {"deadline": "realtime", "cpu-used": "8"}, 0),
]
N = 100


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  base = tmp_path_factory.mktemp("seek")
  out = {}
  for k, (name, codec, ext, gop, rate, opts, start) in enumerate(FILES):
    path = base / f"{name}.{ext}"
    encode(path, textured(N, seed=k), codec, gop, rate, opts, start)
    video = decode.decode_video(str(path), limit=10_000)
    out[name] = (str(path), np.stack([video.rgb(i) for i in range(video.num_frames)]))
  return out


def _span(path, needed, index=None):
  got, opened = {}, []

  def reopen():
    opened.append(av.open(path))
    return opened[-1], opened[-1].streams.video[0]

  try:
    c, stream = reopen()
    if index is None:
      index = decode.index_stream(c, stream)
    count = decode.decode_container_span(
        c, stream, index, needed, lambda i, f: got.__setitem__(i, f.to_ndarray(format="rgb24")),
        reopen)
  finally:
    for c in opened:
      c.close()
  return index, got, count


@pytest.mark.parametrize("name", [f[0] for f in FILES])
def test_seek_clip_equals_full_decode_and_decodes_only_from_the_keyframe(files, name):
  path, full = files[name]
  assert len(full) == N
  index, _, _ = _span(path, [0])
  assert index.num_frames == N and (index.height, index.width) == (H, W)
  keys = index.keyframes.tolist()
  # Long keyframe gaps (encoders may move a keyframe by a few frames around B-frames).
  gop = dict((f[0], f[3]) for f in FILES)[name]
  assert keys[0] == 0 and len(keys) >= 3 and max(np.diff(keys)) >= gop - 3
  # Windows that start on, just after, and just before a keyframe, and one far into the video.
  for needed in ([keys[1] + s for s in range(0, 16, 2)], [keys[1] - 1 + s for s in range(8)],
                 [N - 1 - 3 * s for s in range(10)][::-1], [3, 4, 5]):
    index, got, count = _span(path, needed)
    assert sorted(got) == sorted(needed)
    for i in needed:
      np.testing.assert_array_equal(got[i], full[i], err_msg=f"{name} frame {i}")
    # Decoded no more than from the last keyframe at or before the first needed frame (plus
    # the few leading B-frames of an open GOP, which come out before their keyframe).
    key = max(k for k in keys if k <= needed[0])
    assert count <= needed[-1] - key + 1 + 3, (name, needed, count, key)


def test_sequential_fallback_without_timestamps_is_frame_exact(files):
  path, full = files["h264_bframes"]
  index, _, _ = _span(path, [0])
  blind = index._replace(pts=None, keyframes=np.zeros((0,), np.int64))
  needed = [50, 57, 64]
  _, got, count = _span(path, needed, blind)
  for i in needed:
    np.testing.assert_array_equal(got[i], full[i])
  assert count == 65  # in order from the start, stopping at the last needed frame


def test_load_clips_matches_clips_cut_from_the_full_decode(files):
  """Same draws, same frames: the clip from the seek path equals rendering the full decode's
  frames with the same plan (scaling by libswscale is compared at full size here)."""
  path, full = files["mpeg2_ts"]
  spec = augment.ClipSpec(8, H, frame_stride=3, crop="center", flip=False, clips_per_video=2)
  clips = decode.load_clips(path, spec, np.random.default_rng(3))
  rng = np.random.default_rng(3)
  temporal = augment.plan_temporal(N, spec, rng)
  plans = augment.plan_spatial(temporal, H, W, spec, rng)
  for k, p in enumerate(plans):
    ref = augment.render(full[p.indices], p.box, spec.image_size, p.flip)
    np.testing.assert_array_equal(clips[k], ref)


def test_resize_while_converting_keeps_content_and_frame_size_small(tmp_path):
  """A 1280x720 video for a 32^2 clip: frames are scaled by libswscale straight to the size the
  crop needs; the clip matches a numpy reference rendered from the full-size decode."""
  # Structure at the scale the clip can show (a period of ~20 output pixels, 450 input pixels): the two filters
  # (libswscale's area average, augment's antialiased bilinear) agree on it.
  frames = textured(6, 720, 1280, seed=2, period=450.0)
  path = tmp_path / "hd.mp4"
  encode(path, frames, "libx264", 6, options={"preset": "ultrafast"})
  video = decode.decode_video(str(path), limit=100)
  full = np.stack([video.rgb(i) for i in range(video.num_frames)])
  spec = augment.ClipSpec(4, 32, frame_stride=1, temporal_offset="center", crop="center",
                          flip=False)
  h, w, box = decode.scaled_target(720, 1280, augment.Box(0, 280, 720, 720), 32)
  assert (h, w, box) == (32, 57, augment.Box(0, 12, 32, 32))
  # A non-square box is stretched to the square (random resized crop), the frame with it.
  assert decode.scaled_target(720, 1280, augment.Box(100, 200, 400, 300), 32) == (
      58, 137, augment.Box(8, 21, 32, 32))
  clip = decode.load_clips(str(path), spec, np.random.default_rng(0))[0]
  ref = augment.render(full[1:5], augment.Box(0, 280, 720, 720), 32, False)
  assert clip.shape == ref.shape
  err = np.abs(clip.astype(np.int16) - ref.astype(np.int16))
  assert err.mean() < 3.0 and np.percentile(err, 99) < 16, (err.mean(), err.max())


@pytest.mark.parametrize("keep", [0.5, 0.6, 0.7, 0.9])
def test_cut_file_serves_the_frames_before_the_cut(tmp_path, keep):
  """An mp4 with its index at the front (faststart) cut part way: it opens and probes fine; the
  packet scan finds it short, and clips come from the frames that are there, for every draw,
  including clips at the end of what is left (B-frames: the decoder holds frames back for
  reordering, so the cut, partial last packet must never reach it)."""
  path = tmp_path / "fs.mp4"
  encode(path, textured(60), "libx264", 20, container_options={"movflags": "+faststart"})
  data = path.read_bytes()
  cut = data[:int(len(data) * keep)]
  spec = augment.ClipSpec(4, 16, frame_stride=1, temporal_offset="center", crop="center")
  notes = {}
  assert decode.load_clips(data, spec, np.random.default_rng(0), notes=notes).shape == (
      1, 4, 16, 16, 3)
  assert not notes  # a complete file is not short
  for draw in range(30):
    notes = {}
    clip = decode.load_clips(cut, augment.ClipSpec(4, 16, frame_stride=1, crop="center"),
                             np.random.default_rng(draw), notes=notes)[0]
    frames, listed = notes["short"]
    t = [int(round((f[..., 1].mean() - 20) / 4)) for f in clip]  # the green frame counter
    assert t == list(range(t[0], t[0] + 4)) and t[-1] < frames, t
  assert 4 <= frames < listed == 60
  # One clip of every frame left: all of them decode, the last one included.
  clip = decode.load_clips(cut, augment.ClipSpec(frames, 16, frame_stride=1, crop="center"),
                           np.random.default_rng(0))[0]
  assert [int(round((f[..., 1].mean() - 20) / 4)) for f in clip] == list(range(frames))


def test_seek_past_a_truncation_with_a_stored_index(tmp_path):
  """A converted record stores its index, so nothing reads the packets first: a seek that lands
  past the cut raises a BadVideoError for that clip, while a clip before the cut still decodes."""
  path = tmp_path / "fs.mp4"
  encode(path, textured(80), "libx264", 10, container_options={"movflags": "+faststart"})
  data = path.read_bytes()
  with av.open(io.BytesIO(data)) as c:
    index = decode.index_stream(c, c.streams.video[0])
  cut = data[:int(len(data) * 0.6)]
  spec = augment.ClipSpec(4, 16, frame_stride=1, crop="center", flip=False)
  late = decode.VideoIndex.from_json(index.to_json())
  np.testing.assert_array_equal(late.pts, index.pts)
  # temporal_offset="random" with a rng whose first draw lands late / early in the video.
  draws = {s: int(np.random.default_rng(s).integers(80 - 3)) for s in range(50)}
  late_seed = next(s for s, d in draws.items() if d > 70)
  early_seed = next(s for s, d in draws.items() if d < 5)
  with pytest.raises(decode.BadVideoError) as err:
    decode.load_clips(cut, spec, np.random.default_rng(late_seed), index=late)
  assert err.value.reason.startswith(("truncated", "decode error")) and not err.value.whole_file
  clip = decode.load_clips(cut, spec, np.random.default_rng(early_seed), index=late)
  assert clip.shape == (1, 4, 16, 16, 3) and clip.std() > 10


def test_convert_short_side_round_trip(files, tmp_path):
  """--short_side re-encodes at the short side with fixed keyframes and stores the index; the
  loader serves clips from it that match the (downscaled) source and the seek path stays exact."""
  from layerlock_jax.data import convert, records  # pylint: disable=g-import-not-at-top
  src = tmp_path / "in"
  src.mkdir()
  for name in ("h264_bframes", "vp9_webm"):
    path = files[name][0]
    (src / os.path.basename(path)).write_bytes(open(path, "rb").read())
  (src / "broken.mp4").write_text("not a video")
  out = tmp_path / "shards"
  # crf=12: the frame-identity check below tells frames apart by 4 levels of mean green, finer
  # than x264's default quality keeps.
  report = convert.convert_folder(str(src), str(out), short_side=32, keyframe_interval=8,
                                  crf=12, workers=1, min_frames=8, log=lambda s: None)
  train = report["splits"]["train"]
  assert train["converted"] == 2 and set(train["skipped_files"]) == {"broken.mp4"}
  assert not any(p.name.startswith(".reencoded") for p in out.iterdir())
  source = records.ArrayRecordSource(str(out), "train", augment.ClipSpec(8, 16))
  for r, name in enumerate(("h264_bframes", "vp9_webm")):
    header, data = records.decode_record(source.raw_records[r])
    assert (header["height"], header["width"], header["num_frames"]) == (32, 48, N)
    assert header["index"]["keyframes"] == list(range(0, N, 8))
    # Content: every frame is the source frame halved (2x2 block means as the reference),
    # compared at the resolution of 4:2:0 chroma (another 2x2 mean of both) since the texture
    # is finer than that.
    video = decode.decode_video(data, limit=1000)
    got = np.stack([video.rgb(i) for i in range(N)]).astype(np.float64)
    ref = files[name][1].astype(np.float64).reshape(N, 32, 2, 48, 2, 3).mean(axis=(2, 4))
    pool = lambda v: v.reshape(N, 16, 2, 24, 2, 3).mean(axis=(2, 4))
    assert np.abs(pool(got) - pool(ref)).mean() < 6, name
    # Frame identity and order: green is a per-frame counter (4 levels apart, wrapping after
    # frame 58), so each output frame's nearest source frame by mean green is the same index.
    g_got, g_ref = got[:59, ..., 1].mean(axis=(1, 2)), ref[:59, ..., 1].mean(axis=(1, 2))
    np.testing.assert_array_equal(np.abs(g_got[:, None] - g_ref[None]).argmin(axis=1),
                                  np.arange(59))
    # Seek-based decoding of the record equals its full decode.
    index = decode.VideoIndex.from_json(header["index"])
    with av.open(io.BytesIO(data)) as c:
      seen = {}
      decode.decode_container_span(c, c.streams.video[0], index, [61, 63, 65],
                          lambda i, f: seen.__setitem__(i, f.to_ndarray(format="rgb24")))
    for i in (61, 63, 65):
      np.testing.assert_array_equal(seen[i], got[i].astype(np.uint8))
    assert source.training_item(5, r, 0)["video"].shape == (1, 8, 16, 16, 3)


def test_convert_crf_trades_bytes_for_fidelity_and_is_validated(files, tmp_path):
  """--crf is x264's quality: a lower value gives a larger stream closer to the source; values
  outside x264's 0-51 scale are refused before anything is converted."""
  from layerlock_jax.data import convert, reencode  # pylint: disable=g-import-not-at-top
  path, frames = files["h264_bframes"]
  ref = frames.astype(np.float64).reshape(N, 32, 2, 48, 2, 3).mean(axis=(2, 4))
  size, err = {}, {}
  for crf in (10, 35):
    dst = str(tmp_path / f"q{crf}.mp4")
    reencode.reencode(path, dst, 32, keyframe_interval=8, crf=crf)
    size[crf] = os.path.getsize(dst)
    video = decode.decode_video(open(dst, "rb").read(), limit=1000)
    err[crf] = np.abs(np.stack([video.rgb(i) for i in range(N)]) - ref).mean()
  assert size[10] > 2 * size[35] and err[10] < err[35]
  (tmp_path / "in").mkdir()
  with pytest.raises(ValueError, match="crf"):
    convert.convert_folder(str(tmp_path / "in"), str(tmp_path / "out"), short_side=32, crf=60)


def test_batches_do_not_depend_on_the_worker_count(files, tmp_path):
  """num_workers only changes who decodes: 0 and 2 workers give the same batches ("auto" may
  resolve differently per machine; the data must not)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from layerlock_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "v"
  folder.mkdir()
  for path, _ in files.values():
    (folder / os.path.basename(path)).write_bytes(open(path, "rb").read())

  def make(workers):
    c = ml_collections.ConfigDict()
    c.source, c.path, c.num_frames, c.image_size = "video_folder", str(folder), 4, 16
    c.num_workers, c.prefetch = workers, 1
    return pipeline.make_train_iterator(c, seed=2, global_batch_size=2, process_index=0,
                                        process_count=1)

  serial = make(0)
  want = [next(serial)["video"] for _ in range(4)]
  parallel = make(2)
  got = [next(parallel)["video"] for _ in range(4)]
  parallel.close()
  for w, g in zip(want, got):
    np.testing.assert_array_equal(w, g)
  assert pipeline.resolve_num_workers("auto", file_backed=False) == 0
  assert 1 <= pipeline.resolve_num_workers("auto", file_backed=True) <= 16
  assert pipeline.resolve_num_workers(3, file_backed=True) == 3
  # Read threads: several where the main process decodes, one per worker process.
  assert pipeline.resolve_read_threads("auto", num_workers=0) == 4
  assert pipeline.resolve_read_threads("auto", num_workers=3) == 1
  assert pipeline.resolve_read_threads(2, num_workers=3) == 2
