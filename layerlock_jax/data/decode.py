"""PyAV decoding: one video (file path, encoded bytes or frames array) -> frames -> clips.

Every file-backed source decodes through this module: `VideoFolderSource` (video_files.py) passes
file paths, the ArrayRecord and TFDS sources (records.py) encoded bytes or already-decoded frames
arrays, and the converter (convert.py) probes and verifies files with the same checks before it
writes shards. One decoder means a video is accepted or rejected by the same rules whichever
source serves it, and the sources only decide what to do with a bad one.

* `probe_file` is the cheap construction-time check (open + stream info, no decoding).
* `load_clips` is what training reads. It plans before it decodes: the frame count, size, frame
  timestamps and keyframe positions come from the packets (`index_stream`, no decoding) or from
  the index a converted shard stores; the clips' frames and crops are drawn
  (augment.py); then it seeks to the keyframe at or before the first needed frame, decodes forward
  to the last one, and scales each needed frame with libswscale to the size at which its crop
  box is exactly S x S (crop, then resize, in one pass). It holds only those small RGB frames: memory does not grow with the video's
  length or resolution, and the decode costs one keyframe gap plus the clip span, not the video.
  Frames are identified by timestamp, so the clip equals the one a full decode would give for the
  same indices (B-frames, odd rates, non-zero start times); streams without usable timestamps are
  decoded in order from the start, stopping after the last needed frame.
* `decode_video` decodes a whole video up to a frame limit (tests, the converter's checks); a
  stream that raises part way, or ends well before the frame count its container lists
  (`check_complete`), is rejected rather than partly used.
* Anything wrong with an input raises `BadVideoError` with a short reason; the sources catch it
  and serve another record instead (video_files.ClipSource). A file whose packets end before the
  frame count its container lists (an off-by-a-few header, or a file cut off) is "short", not
  broken: `load_clips` plans its clips on the frames that are there (`VideoIndex.listed` keeps
  the listed count, `notes` reports it) and fails only if no clip fits (`whole_file`); a decode
  that fails inside one clip's span (e.g. a seek past the cut of a converted record) only fails
  that clip.
"""
from __future__ import annotations

import collections
import io
import math
import os
import threading
from typing import Any, NamedTuple, Sequence

import av
import av.video.reformatter
import numpy as np

from layerlock_jax.data import augment
from layerlock_jax.data import packets as packets_lib

DEFAULT_MAX_DECODE_FRAMES = 1024


class BadVideoError(Exception):
  """A video that cannot give a clip; `reason` is short and human-readable."""

  def __init__(self, reason: str, whole_file: bool = True):
    super().__init__(reason)
    # False: the failure concerns the frames one clip needed (a seek past a cut, a decode error
    # mid-span); other clips of the same file may still decode.
    self.whole_file = whole_file

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
  e.g. between an h264 and a vp9 file), which costs more than decoding a small frame. One kept
  context per input kind costs next to nothing (docs/data.md).
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


def open_container(src: str | bytes) -> Any:
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


def video_stream(container) -> Any:
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
  container = open_container(src)
  frames = []
  try:
    stream = video_stream(container)
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
    container = open_container(path)
  except OSError as e:  # e.g. a dangling symlink
    return ProbeResult(f"unreadable ({e})", None)
  except BadVideoError as e:
    return ProbeResult(e.reason, None)
  with container:
    try:
      frames = int(video_stream(container).frames or 0)
    except BadVideoError as e:
      return ProbeResult(e.reason, None)
  if 0 < frames < min_frames:
    return ProbeResult(f"too short: {frames} frame(s) < {min_frames} per clip", frames)
  return ProbeResult(None, frames or None)


# ------------------------------------------------------------------------------------------------
# Seek-based clip loading: plan first, decode only the span the clips need.


class VideoIndex(NamedTuple):
  """What planning and seeking need, read from the container's packets without decoding.

  Frame i is the i-th frame in presentation order, which is the order a full decode returns
  frames in, so `pts[i]` maps a decoded frame back to its index whatever the decode order
  (B-frames) or the start time.
  """
  num_frames: int
  height: int
  width: int
  pts: np.ndarray | None     # (num_frames,) int64 increasing; None: not usable, decode in order
  keyframes: np.ndarray      # frame indices of keyframes, increasing (seek targets)
  # Where each frame's packet lies (only for streams the converter encoded; packets.py): the
  # loader then decodes from the bytes without opening the container.
  packets: packets_lib.PacketTable | None = None
  # The frame count the container lists where the stream holds fewer (a "short" file: the index
  # covers only the frames that are there); None when the counts agree or none is listed.
  listed: int | None = None
  # pts of the last packet of a short stream: never fed to the decoder (a cut can leave it
  # partial, and a decoder holding frames back for reordering would fail on it).
  tail_pts: int | None = None

  def to_json(self) -> dict[str, Any]:
    """A compact form for a shard record's header (a constant frame step is stored as 2 ints)."""
    out = {"num_frames": self.num_frames, "height": self.height, "width": self.width,
           "keyframes": [int(k) for k in self.keyframes], "pts": None}
    if self.packets is not None:
      out["packets"] = self.packets.to_json()
    if self.pts is not None:
      steps = np.diff(self.pts)
      if len(steps) and (steps == steps[0]).all():
        out["pts"] = {"start": int(self.pts[0]), "step": int(steps[0])}
      else:
        out["pts"] = [int(p) for p in self.pts]
    return out

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "VideoIndex":
    n, pts = int(d["num_frames"]), d.get("pts")
    if isinstance(pts, dict):
      pts = pts["start"] + pts["step"] * np.arange(n, dtype=np.int64)
    elif pts is not None:
      pts = np.asarray(pts, np.int64)
    table = d.get("packets")
    table = packets_lib.PacketTable.from_json(table) if table else None
    if table is not None and (len(table.sizes) != n or pts is None):
      raise ValueError(f"packet table of {len(table.sizes)} frames for a {n}-frame index")
    return cls(n, int(d["height"]), int(d["width"]), pts,
               np.asarray(d.get("keyframes", []), np.int64), table)


def index_stream(container, stream) -> VideoIndex:
  """Reads every packet of `stream` (no decoding) into an index.

  A stream with fewer packets than its container lists (check_complete) is indexed on the frames
  that are there, less its last packet (a cut can leave it partial), with `listed` set.
  """
  pts, key, packets = [], [], 0
  try:
    for packet in container.demux(stream):
      if packet.size == 0:
        if packet.dts is not None:
          packets += 1  # an empty "skipped frame" packet (e.g. AVI) still counts as listed
        continue      # the demuxer's end-of-stream flush packet
      packets += 1
      if packet.is_discard:
        continue      # hidden by an edit list: the decoder never returns it
      pts.append(packet.pts)
      key.append(packet.is_keyframe)
  except Exception as e:  # pylint: disable=broad-except
    raise BadVideoError(f"demux error (after {packets} packet(s); {type(e).__name__}: "
                        f"{e})") from None
  declared = int(stream.frames or 0)
  listed = tail_pts = None
  try:
    check_complete(packets, declared)
  except BadVideoError:
    # Fewer packets than the container lists: an off-by-a-few header (common in real corpora) or
    # a file cut off mid-way. The frames that are there are used, less the last packet (a cut can
    # leave it partial) and every frame shown after it (with B-frames, frames decoded before it
    # and shown after it; the index stays a gapless run of presentation order). Clips that do
    # not fit in what is left fail as "too short".
    listed = declared
    if len(pts) > 1:
      tail_pts = pts[-1]
      keep = [i for i in range(len(pts) - 1)
              if tail_pts is None or pts[i] is None or pts[i] < tail_pts]
      pts, key = [pts[i] for i in keep], [key[i] for i in keep]
  if not pts:
    raise BadVideoError("no decodable frames")
  height, width = stream.codec_context.height, stream.codec_context.width
  if height < 1 or width < 1:
    raise BadVideoError(f"frames of size {width}x{height}")
  order, times = None, None
  if all(p is not None for p in pts):
    times = np.asarray(pts, np.int64)
    order = np.argsort(times, kind="stable")
    times = times[order]
    if len(times) > 1 and not (np.diff(times) > 0).all():
      times = None  # repeated timestamps: frames cannot be told apart by pts
  if times is None:
    return VideoIndex(len(pts), height, width, None, np.zeros((0,), np.int64), listed=listed,
                      tail_pts=tail_pts)
  keyframes = np.flatnonzero(np.asarray(key, bool)[order]).astype(np.int64)
  return VideoIndex(len(pts), height, width, times, keyframes, listed=listed, tail_pts=tail_pts)


def _decoded(container, stream, index: VideoIndex):
  """container.decode(stream), less the tail packet of a short stream (VideoIndex.tail_pts)."""
  if index.tail_pts is None:
    yield from container.decode(stream)
    return
  for packet in container.demux(stream):
    if packet.size and packet.pts == index.tail_pts:
      continue
    yield from packet.decode()  # the demuxer's last, empty packet flushes the decoder


def segment_window(index: VideoIndex, stream, segment: tuple[float, float]) -> tuple[int, int]:
  """Frame indices [first, stop) whose presentation times lie in the segment [start, end) s.

  Times count from the first frame (pts relative to the first pts, or frame / rate for streams
  without usable timestamps).
  """
  start, end = float(segment[0]), float(segment[1])
  if index.pts is not None and stream.time_base:
    t = (index.pts - index.pts[0]).astype(np.float64) * float(stream.time_base)
  else:
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    if rate <= 0:
      raise BadVideoError("no timestamps and no frame rate: cannot locate the segment")
    t = np.arange(index.num_frames, dtype=np.float64) / rate
  eps = 1e-6
  first = int(np.searchsorted(t, start - eps, side="left"))
  stop = int(np.searchsorted(t, end - eps, side="left"))
  if first >= index.num_frames:
    raise BadVideoError(f"segment [{start:g}, {end:g}) s starts after the video's last frame "
                        f"({t[-1]:.3g} s)")
  return first, stop


def decode_container_span(container, stream, index: VideoIndex, needed: Sequence[int], on_frame,
                 reopen=None) -> int:
  """Calls on_frame(i, frame) for every needed frame index i, decoding as little as it can.

  With a usable index: seek (backward) to the last keyframe at or before the first needed frame,
  decode forward, map frames to indices by pts, stop at the last needed frame. Nothing is kept
  here: the buffer is whatever `on_frame` keeps of the needed frames. Demuxers that land after
  the requested keyframe (MPEG-TS seeks by bisection) are retried from up to two keyframes
  earlier; if that still misses a frame, or without a usable index, the file is decoded from its
  start (`reopen()` gives a fresh (container, stream): rewinding by a seek is exactly what cannot
  be trusted here), frames mapped by pts, or counted in order when there are no timestamps.
  Returns how many frames it decoded (all attempts together); raises BadVideoError if a needed
  frame never comes (a cut-off file).
  """
  needed_set = set(int(i) for i in needed)
  first, last = min(needed_set), max(needed_set)
  got: set[int] = set()
  decoded = 0
  times = index.pts
  by_time = times is not None
  cursor = 0  # where the next frame's pts is expected in `times` (frames come in pts order)

  def position(pts) -> int | None:
    """Index of the frame with this pts, or None. O(1) while frames come in order: no per-call
    table of the whole video (a 60 s video would cost as much as its frames here)."""
    nonlocal cursor
    if pts is None:
      return None
    if not (cursor < len(times) and times[cursor] == pts):
      cursor = int(np.searchsorted(times, pts))
      if not (cursor < len(times) and times[cursor] == pts):
        return None
    cursor += 1
    return cursor - 1

  def run(frames, by_pts: bool) -> None:
    nonlocal decoded
    got.clear()
    for count, frame in enumerate(frames):
      if by_pts:
        i = position(frame.pts)
        if i is None or (count == 0 and i > first):
          return  # landed after the span's start, or a frame the index does not know
      else:
        i = count
      decoded += 1
      if i in needed_set:
        on_frame(i, frame)
        got.add(i)
      if i >= last:
        return

  if by_time and len(index.keyframes) and first > 0:
    at = int(np.searchsorted(index.keyframes, first, side="right")) - 1
    for a in range(at, max(at - 3, -1), -1):
      container.seek(int(times[index.keyframes[a]]), stream=stream, backward=True,
                     any_frame=False)
      cursor = int(index.keyframes[a])
      run(_decoded(container, stream, index), by_pts=True)
      if got == needed_set:
        return decoded
  if reopen is not None:
    container, stream = reopen()
  cursor = 0
  run(_decoded(container, stream, index), by_pts=by_time)
  if got != needed_set:
    missing = sorted(needed_set - got)
    raise BadVideoError(f"truncated: frame {missing[0]} of the {index.num_frames} the container "
                        "lists could not be decoded", whole_file=False)
  return decoded


def scaled_target(height: int, width: int, box: augment.Box, size: int
                   ) -> tuple[int, int, augment.Box]:
  """The frame size at which the crop box becomes exactly size x size, and the box there.

  Scaling the whole frame by (size / box.height, size / box.width) and cutting the box out is
  the random resized crop (crop, then resize to a square) done by libswscale in one pass with
  the pixel-format conversion: the frame is never materialised larger than the clip needs and
  nothing is resized again in numpy. The box corner is rounded to the nearest output pixel.
  """
  sy, sx = size / box.height, size / box.width
  h, w = max(size, int(round(height * sy))), max(size, int(round(width * sx)))
  top = min(int(round(box.top * sy)), h - size)
  left = min(int(round(box.left * sx)), w - size)
  return h, w, augment.Box(top, left, size, size)


# Area averaging when shrinking. FULL_CHR_H_INT: without it libswscale takes a fast YUV->RGB path
# for some output widths (e.g. multiples of 4) that shifts colours by ~2-3% of the range, so a
# clip's colours would depend on its crop size.
_SCALE_FLAGS = (av.video.reformatter.Interpolation.AREA
                | av.video.reformatter.Interpolation.FULL_CHR_H_INT)


def _to_rgb(frame, height: int, width: int) -> np.ndarray:
  # Explicit size: also scales a frame of a stream whose resolution changes mid-way.
  return _reformatter(frame).reformat(
      frame, format="rgb24", width=width, height=height, interpolation=_SCALE_FLAGS,
      threads=1).to_ndarray()


def load_clips(src: str | bytes | np.ndarray, spec: augment.ClipSpec, rng: np.random.Generator,
               *, max_frames: int = DEFAULT_MAX_DECODE_FRAMES, known_frames: int | None = None,
               index: VideoIndex | None = None, decode_threads: int = 1,
               segment: tuple[float, float] | None = None,
               notes: dict[str, Any] | None = None) -> np.ndarray:
  """`spec.clips_per_video` clips uint8 (k, T, S, S, 3) of one video; BadVideoError if unusable.

  Plans the clips before decoding anything: the frame count and size come from `index` (stored
  in a converted shard), else from reading the packets (index_stream), capped at `max_frames`
  (`known_frames`, a count verified by a full decode, takes precedence over the packet count).
  Only the frames the clips use are decoded (seeking to the keyframe before them) and each is
  scaled by libswscale so that its crop box comes out at exactly S x S, so memory per video is
  about T small RGB frames whatever the video's length and resolution. The draw order (every
  temporal window, then every crop and flip; augment.py) does not depend on how frames are read.

  `segment` (seconds, [start, end)) restricts the clips to the frames shown in that span of a
  file (a Kinetics annotation on a full video). A file holding fewer frames than its container
  lists is read from the frames that are there; `notes["short"] = (frames, listed)` says so.
  """
  if isinstance(src, np.ndarray) and src.dtype != np.object_:
    return _clips_from_array(_frames_array(src)[:max_frames], spec, rng)
  if isinstance(src, np.ndarray):
    src = src.item()  # a TFDS bytes scalar
  if (index is not None and index.packets is not None
      and isinstance(src, (bytes, bytearray, memoryview))):
    # A stream the converter encoded: decode its packets without opening the container.
    plan = _ClipPlan(index, spec, rng, known_frames, max_frames)
    needed = sorted(plan.users)
    at = int(np.searchsorted(index.keyframes, needed[0], side="right")) - 1
    start = int(index.keyframes[at]) if at >= 0 else 0
    try:
      packets_lib.decode_span(src, index.packets, start, needed, plan.keep)
    except Exception as e:  # pylint: disable=broad-except
      raise BadVideoError(f"decode error ({type(e).__name__}: {e})", whole_file=False) from None
    return plan.clips()
  opened = []  # every container this call opens, closed at the end

  def reopen():
    container = open_container(src)
    opened.append(container)
    stream = video_stream(container)
    stream.codec_context.thread_count = int(decode_threads)
    return container, stream

  try:
    container, stream = reopen()
    fresh = True  # nothing read yet: a sequential decode can start right here
    if index is None:
      try:
        index = index_stream(container, stream)
      finally:
        fresh = False
    window = None if segment is None else segment_window(index, stream, segment)
    if index.listed is not None and notes is not None:
      notes["short"] = (index.num_frames, index.listed)
    plan = _ClipPlan(index, spec, rng, known_frames, max_frames, window)
    try:
      decode_container_span(container, stream, index, sorted(plan.users), plan.keep,
                   reopen=None if fresh and (index.pts is None or min(plan.users) == 0)
                   else reopen)
    except BadVideoError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise BadVideoError(f"decode error ({type(e).__name__}: {e})", whole_file=False) from None
  finally:
    for c in opened:
      c.close()
  return plan.clips()


class _ClipPlan:
  """The clips of one video, drawn before anything is decoded, and the crops kept as frames come.

  The draw order (every temporal window, then every crop and flip; augment.py) does not depend on
  how the frames are read.
  """

  def __init__(self, index: VideoIndex, spec: augment.ClipSpec, rng: np.random.Generator,
               known_frames: int | None, max_frames: int,
               window: tuple[int, int] | None = None):
    total = min(int(known_frames or index.num_frames), index.num_frames if window else max_frames)
    first, stop = window or (0, total)
    stop = min(stop, total)
    # Clips are drawn from the window's first max_frames frames (the whole file without one).
    available = max(0, min(stop - first, max_frames))
    try:
      temporal = augment.plan_temporal(available, spec, rng)
    except augment.TooShortError as e:
      where = f" in segment frames [{first}, {stop})" if window else ""
      raise BadVideoError(f"{e}{where}") from None
    temporal = [t + first for t in temporal]
    self.plans = augment.plan_spatial(temporal, index.height, index.width, spec, rng)
    self.targets = [scaled_target(index.height, index.width, p.box, spec.image_size)
                    for p in self.plans]
    self.users = collections.defaultdict(list)  # frame index -> clips that use it
    for k, p in enumerate(self.plans):
      for i in sorted({int(i) for i in p.indices}):
        self.users[i].append(k)
    self.crops: dict[tuple[int, int], np.ndarray] = {}

  def keep(self, i: int, frame) -> None:
    # Only the S x S crop (a view; mirrored if drawn) is kept of each scaled frame.
    for k in self.users[i]:
      h, w, box = self.targets[k]
      crop = _to_rgb(frame, h, w)[box.top:box.top + box.height, box.left:box.left + box.width]
      self.crops[(k, i)] = crop[:, ::-1] if self.plans[k].flip else crop

  def clips(self) -> np.ndarray:
    # One copy: the kept crops straight into the (k, T, S, S, 3) batch.
    return np.stack([np.stack([self.crops[(k, int(i))] for i in p.indices])
                     for k, p in enumerate(self.plans)])


def _clips_from_array(frames: np.ndarray, spec: augment.ClipSpec,
                      rng: np.random.Generator) -> np.ndarray:
  """Clips of an already-decoded uint8 (T, H, W, 3) array (a TFDS Tensor feature)."""
  try:
    temporal = augment.plan_temporal(len(frames), spec, rng)
  except augment.TooShortError as e:
    raise BadVideoError(str(e)) from None
  plans = augment.plan_spatial(temporal, frames.shape[1], frames.shape[2], spec, rng)
  return np.stack([augment.render(frames[p.indices], p.box, spec.image_size, p.flip)
                   for p in plans])
