"""Decoding a converted record's frames straight from its packets, without opening the container.

A record written by `convert --short_side` holds an mp4 that this package encoded itself: H.264,
no B-frames, one packet per frame in presentation order (reencode.py). For such a stream the
converter also stores a `PacketTable` (where each frame's packet lies in the mp4 bytes, and the
decoder's configuration), and the loader feeds those byte ranges to a kept H.264 decoder. That
skips what a small clip otherwise pays per record for the container: `av.open` (probing, parsing
the moov box), the seek, and building a fresh decoder (a large share of a small clip's cost:
docs/data.md).

The table is only written after the converter checked the stream it describes (decode order ==
presentation order, one packet per frame); records without one (kept
original bytes, older shards) decode through the container as before. A record whose bytes were
cut after conversion is caught before any decoding: a packet that ends past the record's end
raises BadVideoError, never a silent short clip.
"""
from __future__ import annotations

import base64
import threading
from typing import Any, Callable, NamedTuple, Sequence

import av
import numpy as np

_KEPT_DECODERS = 8  # per thread; one per distinct stream configuration seen recently
_THREAD_STATE = threading.local()


class PacketTable(NamedTuple):
  """Frame i of the stream is the packet video[offsets[i]:offsets[i] + sizes[i]]."""
  codec: str            # FFmpeg decoder name, e.g. "h264"
  extradata: bytes      # the decoder configuration (H.264: the mp4's avcC box)
  offsets: np.ndarray   # (num_frames,) int64 byte offsets into the record's video bytes
  sizes: np.ndarray     # (num_frames,) int64

  def to_json(self) -> dict[str, Any]:
    out = {"codec": self.codec, "extradata": base64.b64encode(self.extradata).decode("ascii"),
           "sizes": [int(s) for s in self.sizes]}
    ends = self.offsets + self.sizes
    if len(self.offsets) > 1 and (self.offsets[1:] == ends[:-1]).all():
      out["start"] = int(self.offsets[0])  # contiguous samples (the usual mp4 mdat): 1 int
    else:
      out["offsets"] = [int(o) for o in self.offsets]
    return out

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "PacketTable":
    sizes = np.asarray(d["sizes"], np.int64)
    if "start" in d:
      offsets = int(d["start"]) + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    else:
      offsets = np.asarray(d["offsets"], np.int64)
    if offsets.shape != sizes.shape or (sizes <= 0).any() or (offsets < 0).any():
      raise ValueError("packet table: offsets and sizes must be non-negative and of equal length")
    return cls(str(d["codec"]), base64.b64decode(d["extradata"]), offsets, sizes)


def table_of(container, stream) -> PacketTable | None:
  """The PacketTable of an opened stream, or None where frames cannot be fed packet by packet:
  a packet out of presentation order (pts != dts, or not increasing), hidden by an edit list, or
  at an unknown position."""
  offsets, sizes, last_pts = [], [], None
  for packet in container.demux(stream):
    if not packet.size:
      continue  # the demuxer's end-of-stream flush packet
    if (packet.pts is None or packet.pts != packet.dts or packet.is_discard
        or (last_pts is not None and packet.pts <= last_pts) or packet.pos is None
        or packet.pos < 0):
      return None
    last_pts = packet.pts
    offsets.append(packet.pos)
    sizes.append(packet.size)
  extradata = stream.codec_context.extradata
  if not offsets or not extradata:
    return None
  return PacketTable(stream.codec_context.name, bytes(extradata), np.asarray(offsets, np.int64),
                     np.asarray(sizes, np.int64))


def _decoder(table: PacketTable):
  """A kept decoder for this stream configuration, reset: no state survives from the last clip."""
  cache = _THREAD_STATE.__dict__.setdefault("decoders", {})
  key = (table.codec, table.extradata)
  ctx = cache.get(key)
  if ctx is None:
    if len(cache) >= _KEPT_DECODERS:
      cache.clear()
    ctx = av.CodecContext.create(table.codec, "r")
    ctx.extradata = table.extradata
    ctx.thread_count = 1  # small frames: codec threads cost more than they save
    cache[key] = ctx
  else:
    ctx.flush_buffers()
  return ctx


def _drop_decoder(table: PacketTable) -> None:
  _THREAD_STATE.__dict__.setdefault("decoders", {}).pop((table.codec, table.extradata), None)


def decode_span(video: bytes, table: PacketTable, start: int, needed: Sequence[int],
                on_frame: Callable[[int, Any], None]) -> int:
  """Calls on_frame(i, frame) for every needed frame i, decoding packets start .. max(needed)
  (`start`: a keyframe at or before min(needed)). Returns how many frames were decoded.

  Raises ValueError for a packet that lies outside `video` (a record cut after conversion) and
  lets decoder errors through; the caller turns both into BadVideoError.
  """
  needed_set = set(int(i) for i in needed)
  last = max(needed_set)
  end = int(table.offsets[last] + table.sizes[last])
  if end > len(video):
    raise ValueError(f"frame {last}'s packet ends at byte {end} of a {len(video)}-byte record")
  view = memoryview(video)
  ctx = _decoder(table)
  decoded, got = 0, set()
  try:
    for i in range(int(start), last + 1):
      at = int(table.offsets[i])
      packet = av.Packet(view[at:at + int(table.sizes[i])])
      packet.pts = packet.dts = i
      for frame in ctx.decode(packet):
        decoded += 1
        if frame.pts in needed_set:
          on_frame(int(frame.pts), frame)
          got.add(int(frame.pts))
    if got != needed_set:  # a decoder that holds frames back: drain it
      for frame in ctx.decode(None):
        decoded += 1
        if frame.pts in needed_set:
          on_frame(int(frame.pts), frame)
          got.add(int(frame.pts))
      _drop_decoder(table)  # drained: this one cannot take packets again
  except Exception:
    _drop_decoder(table)  # whatever state an error left must not reach the next clip
    raise
  if got != needed_set:
    raise ValueError(f"frame {min(needed_set - got)} never came out of the decoder")
  return decoded
