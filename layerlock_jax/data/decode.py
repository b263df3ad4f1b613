"""PyAV decoding: one video (file path, encoded bytes or frames array) -> frames -> clips.

Every file-backed source decodes through this module: `VideoFolderSource` (video_files.py) passes
file paths, the ArrayRecord and TFDS sources (records.py) encoded bytes or already-decoded frames
arrays, and the converter (convert.py) probes and verifies files with the same checks before it
writes shards. One decoder means a video is accepted or rejected by the same rules whichever
source serves it, and the sources only decide what to do with a bad one.

* `probe_file` is the cheap construction-time check (open + stream info, ~1 ms, no decoding).
* `decode_video` decodes up to a frame limit; a stream that raises part way, or ends well before
  the frame count its container lists (`check_complete`), is rejected rather than partly used.
* `load_clips` plans a video's clips (augment.py), decodes only as far as they need and renders
  them; frames are converted to RGB only when a clip uses them.
* Anything wrong with an input raises `BadVideoError` with a short reason; the sources catch it
  and serve another record instead (video_files.ClipSource).

Decoding keeps a video's decoded (YUV) frames until its clips are cut, capped at
data.max_decode_frames (default 1024; later frames are never used). Convert very long or
high-resolution collections with `python -m layerlock_jax.data.convert` (and re-encode if needed).
"""
from __future__ import annotations

import io
import os
import threading
from typing import Any, NamedTuple, Sequence

import av
import av.video.reformatter
import numpy as np

from layerlock_jax.data import augment

DEFAULT_MAX_DECODE_FRAMES = 1024


class BadVideoError(Exception):
  """A video that cannot give a clip; `reason` is short and human-readable."""

  @property
  def reason(self) -> str:
    return str(self.args[0])


class DecodedVideo:
  """Decoded frames, converted to RGB on demand (only the frames a clip uses are converted)."""

  def __init__(self, frames: Sequence[Any] | np.ndarray):
    self._frames = frames
    if isinstance(frames, np.ndarray):
      self.num_frames, self.height, self.width = frames.shape[:3]
    else:
      self.num_frames = len(frames)
      self.height, self.width = frames[0].height, frames[0].width

  def rgb(self, index: int) -> np.ndarray:
    frame = self._frames[index]
    if isinstance(frame, np.ndarray):
      return frame
    # Explicit size: a stream whose resolution changes mid-way is scaled back to the first frame's.
    return _reformatter(frame).reformat(frame, format="rgb24", width=self.width,
                                        height=self.height).to_ndarray()


_THREAD_STATE = threading.local()


def _reformatter(frame) -> Any:
  """A libswscale context for frames like `frame`, kept per (reader) thread.

  `frame.to_ndarray(format=...)` builds a new context for every frame object, and one shared
  reformatter rebuilds it whenever the input changes (size, pixel format, colour space or range -
  e.g. between an h264 and a vp9 file): 0.2-5 ms per frame, more than decoding a small frame. One
  kept context per input kind costs ~0.03 ms per frame.
  """
  cache = _THREAD_STATE.__dict__.setdefault("reformatters", {})
  key = (frame.width, frame.height, frame.format.name, int(frame.colorspace),
         int(frame.color_range))
  if key not in cache:
    if len(cache) >= 16:
      cache.clear()  # a stream of ever-new sizes must not grow the cache without bound
    cache[key] = av.video.reformatter.VideoReformatter()
  return cache[key]


def _frames_array(value: np.ndarray) -> np.ndarray:
  """Already-decoded frames (e.g. a TFDS Tensor feature) as uint8 (T, H, W, 3)."""
  if value.dtype != np.uint8:
    raise BadVideoError(f"frames array has dtype {value.dtype}, expected uint8")
  if value.ndim == 3:
    value = value[..., None]
  if value.ndim != 4 or value.shape[-1] not in (1, 3) or 0 in value.shape:
    raise BadVideoError(f"frames array has shape {value.shape}, expected (T, H, W, 3)")
  return np.repeat(value, 3, axis=-1) if value.shape[-1] == 1 else value


def _open(src: str | bytes) -> Any:
  if isinstance(src, (bytes, bytearray, memoryview)):
    if len(src) == 0:
      raise BadVideoError("empty (0 bytes)")
    data = io.BytesIO(src)
  else:
    if os.path.getsize(src) == 0:
      raise BadVideoError("empty file (0 bytes)")
    data = src
  try:
    return av.open(data, metadata_errors="ignore")
  except Exception as e:  # pylint: disable=broad-except
    # Any failure to open (FFmpeg errors, OSError, odd metadata) is a property of the file.
    raise BadVideoError(f"unreadable ({type(e).__name__}: {e})") from None


def _video_stream(container) -> Any:
  """The first real video stream (cover art in mp4/mkv is a one-frame 'video' stream: ignored)."""
  attached = int(av.stream.Disposition.attached_pic)
  streams = [s for s in container.streams.video if not int(s.disposition) & attached]
  if not streams:
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    raise BadVideoError(f"no video stream (streams: {', '.join(kinds)})")
  stream = streams[0]
  if stream.codec_context is None:
    raise BadVideoError(f"no decoder for codec {stream.codec.name if stream.codec else '?'}")
  return stream


def check_complete(decoded: int, declared: int) -> None:
  """Flags a stream that ended early without an error: the usual face of a file cut off mid-way.

  `declared` is the container's frame count (exact in mp4 and avi, 0 = unknown in webm/mkv). A
  small shortfall is normal (an mp4 edit list hides the frames before its start), so only a gap of
  more than max(3, 5%) frames counts as truncation.
  """
  if declared and declared - decoded > max(3, declared // 20):
    raise BadVideoError(f"truncated: decoded {decoded} of the {declared} frames the container "
                        "lists")


def decode_video(src: str | bytes | np.ndarray, limit: int) -> DecodedVideo:
  """Decodes up to `limit` frames of a file path, encoded bytes, or an existing frames array.

  Raises BadVideoError for anything wrong with the input, including a stream that raises part way
  (a truncated file): a partial decode is not silently accepted, so whether a file is usable does
  not depend on which frames a clip happened to need.
  """
  if isinstance(src, np.ndarray) and src.dtype != np.object_:
    return DecodedVideo(_frames_array(src)[:limit])
  if isinstance(src, np.ndarray):
    src = src.item()  # a TFDS bytes scalar
  container = _open(src)
  frames = []
  try:
    stream = _video_stream(container)
    declared = int(stream.frames or 0)
    for frame in container.decode(stream):
      frames.append(frame)
      if len(frames) >= limit:
        break
    else:
      check_complete(len(frames), declared)
  except BadVideoError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise BadVideoError(f"decode error (after {len(frames)} frame(s); {type(e).__name__}: "
                        f"{e})") from None
  finally:
    container.close()
  if not frames:
    raise BadVideoError("no decodable frames")
  if frames[0].width < 1 or frames[0].height < 1:
    raise BadVideoError(f"frames of size {frames[0].width}x{frames[0].height}")
  return DecodedVideo(frames)


class ProbeResult(NamedTuple):
  reason: str | None           # None: usable as far as the container tells
  exact_frames: int | None     # the container's frame count where it states one


def probe_file(path: str, min_frames: int) -> ProbeResult:
  """Cheap checks (open + stream info, no decoding) of one file."""
  try:
    container = _open(path)
  except OSError as e:  # e.g. a dangling symlink
    return ProbeResult(f"unreadable ({e})", None)
  except BadVideoError as e:
    return ProbeResult(e.reason, None)
  with container:
    try:
      frames = int(_video_stream(container).frames or 0)
    except BadVideoError as e:
      return ProbeResult(e.reason, None)
  if 0 < frames < min_frames:
    return ProbeResult(f"too short: {frames} frame(s) < {min_frames} per clip", frames)
  return ProbeResult(None, frames or None)


def load_clips(src: str | bytes | np.ndarray, spec: augment.ClipSpec, rng: np.random.Generator,
               *, max_frames: int = DEFAULT_MAX_DECODE_FRAMES,
               known_frames: int | None = None) -> np.ndarray:
  """`spec.clips_per_video` clips uint8 (k, T, S, S, 3) of one video; BadVideoError if unusable.

  With `known_frames` (a verified count, e.g. from a converted shard) the window is planned first
  and decoding stops after the last frame needed; otherwise the video is decoded (up to max_frames)
  to learn its length. Both give identical clips (augment's fixed draw order).
  """
  try:
    if known_frames is not None:
      available = min(int(known_frames), max_frames)
      temporal = augment.plan_temporal(available, spec, rng)
      need = max(int(ix[-1]) for ix in temporal) + 1
      video = decode_video(src, need)
      if video.num_frames < need:
        raise BadVideoError(f"decoded only {video.num_frames} frame(s), but its record states "
                            f"{known_frames}")
    else:
      video = decode_video(src, max_frames)
      temporal = augment.plan_temporal(video.num_frames, spec, rng)
  except augment.TooShortError as e:
    raise BadVideoError(str(e)) from None
  plans = augment.plan_spatial(temporal, video.height, video.width, spec, rng)
  try:
    rgb = {i: video.rgb(i) for i in sorted({int(i) for p in plans for i in p.indices})}
  except Exception as e:  # pylint: disable=broad-except
    raise BadVideoError(f"frame conversion failed ({type(e).__name__}: {e})") from None
  return np.stack([augment.render(np.stack([rgb[int(i)] for i in p.indices]), p.box,
                                  spec.image_size, p.flip) for p in plans])
