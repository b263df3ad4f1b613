"""Re-encoding one video at a smaller size with regular keyframes (for the shard converter).

Large corpora are usually pre-resized before training (VideoMAE, 4DS): a clip of a 64-pixel
H.264 stream with a keyframe every 16 frames decodes in a few milliseconds, where the same clip
of a 720p source with 250-frame keyframe gaps costs hundreds. `reencode` decodes a file once
(this is also the full verification: a file that breaks part way raises BadVideoError), scales
every frame with libswscale to the requested short side and writes H.264 in mp4 with fixed
keyframe positions; `index_file` returns the VideoIndex that the loader plans and seeks with,
stored in each shard record so the loader never scans a record's packets, with a table of where
each frame's packet lies so that it decodes without opening the container (packets.py).
"""
from __future__ import annotations

import fractions
from typing import Any

import av

from layerlock_jax.data import decode
from layerlock_jax.data import packets

# A 16-frame clip at stride 2 spans 31 frames; a keyframe every 16 frames adds ~7 lead-in frames
# on average instead of ~15 with 32, for more bytes (measured: docs/data.md).
DEFAULT_KEYFRAME_INTERVAL = 16
# x264's own default quality (what `ffmpeg -vf scale=...` pre-resizing gives). Decoding cost
# follows the bitrate (CAVLC reads every coefficient; measured per CRF: docs/data.md).
DEFAULT_CRF = 23


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) with the short side at `short_side` (never upscaled), both even (4:2:0)."""
  f = min(1.0, short_side / min(height, width))
  even = lambda v: max(2, int(round(v * f / 2)) * 2)
  return even(height), even(width)


def index_file(path: str, packet_table: bool = False) -> dict[str, Any]:
  """The VideoIndex of a file in its JSON form (packets only, no decoding). `packet_table`: also
  where each frame's packet lies (packets.py), for a stream this module wrote."""
  with decode._open(path) as container:  # pylint: disable=protected-access
    index = decode.index_stream(container, decode._video_stream(container))  # pylint: disable=protected-access
  if packet_table:
    with decode._open(path) as container:  # pylint: disable=protected-access
      table = packets.table_of(container, decode._video_stream(container))  # pylint: disable=protected-access
    if table is not None and len(table.sizes) == index.num_frames:
      index = index._replace(packets=table)
  return index.to_json()


def reencode(src: str, dst: str, short_side: int,
             keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL,
             crf: float = DEFAULT_CRF) -> dict[str, Any]:
  """Writes `src` to `dst` (mp4, H.264 at x264 quality `crf`) at short side `short_side`; returns
  the converter's record fields {"ok", "num_frames", "width", "height", "codec", "index", "path"}."""
  container = decode._open(src)  # pylint: disable=protected-access
  count = 0
  try:
    stream = decode._video_stream(container)  # pylint: disable=protected-access
    rate = stream.average_rate or stream.guessed_rate or fractions.Fraction(25)
    declared = int(stream.frames or 0)
    with av.open(dst, "w") as out:
      enc = None
      for frame in container.decode(stream):
        if enc is None:
          height, width = scaled_size(frame.height, frame.width, short_side)
          rate = fractions.Fraction(rate).limit_denominator(100000)
          enc = out.add_stream("libx264", rate=rate)
          enc.time_base = enc.codec_context.time_base = 1 / rate
          enc.height, enc.width, enc.pix_fmt = height, width, "yuv420p"
          # Keyframes exactly every `keyframe_interval` frames (no scene-cut keyframes), no
          # B-frames: a clip's decode then starts at most keyframe_interval - 1 frames early.
          # tune=fastdecode (no CABAC, no deblocking): faster decoding for a few more bytes.
          # One encoder thread: x264's output depends on its thread count, which "auto" takes
          # from the machine, so a file re-encoded on another worker (a cluster runner, a
          # resumed run) would come out different. The converter runs files in parallel instead.
          enc.options = {"crf": f"{crf:g}", "preset": "veryfast", "bf": "0", "tune": "fastdecode",
                         "threads": "1",
                         "x264-params": f"keyint={keyframe_interval}:min-keyint="
                                        f"{keyframe_interval}:scenecut=0"}
        small = frame.reformat(width=width, height=height, format="yuv420p",
                               interpolation=av.video.reformatter.Interpolation.AREA)
        small.pts = count  # one tick per frame: frame index = timestamp in the output
        small.time_base = 1 / rate
        # A decoded frame keeps its source picture type, and the encoder would turn every
        # source keyframe into a keyframe: only keyframe_interval should decide.
        small.pict_type = av.video.frame.PictureType.NONE
        for packet in enc.encode(small):
          out.mux(packet)
        count += 1
      if enc is not None:
        for packet in enc.encode():
          out.mux(packet)
    decode.check_complete(count, declared)
  except decode.BadVideoError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise decode.BadVideoError(f"decode error (after {count} frame(s); {type(e).__name__}: "
                               f"{e})") from None
  finally:
    container.close()
  if count == 0:
    raise decode.BadVideoError("no decodable frames")
  index = index_file(dst, packet_table=True)
  if index["num_frames"] != count:
    raise decode.BadVideoError(f"re-encoded stream holds {index['num_frames']} of {count} frames")
  return {"ok": True, "num_frames": count, "width": width, "height": height, "codec": "h264",
          "index": index, "path": dst}
