"""A folder of real, mixed videos shaped like a Kinetics-style corpus, written with PyAV.

  python bench/video_corpus.py --out=/tmp/video_corpus [--scale=1.0]

What it writes (cached: an existing complete corpus is reused; --scale shrinks the counts):
* train/: 10 s at 30 fps H.264 (B-frames, a keyframe every 150-250 frames) at 640x360 and
  1280x720, VP9 (webm) and MPEG-4 (avi) at 640x360, MPEG-2 (ts) at 720x480 with a 29.97 rate,
  a few short clips (40-60 frames, 320x240) and the broken files a real crawl holds: truncated
  (header lost / cut mid-stream with the index at the front / AVI cut), empty, text named .mp4,
  audio only, too short.
* length/: the same 640x360 content at 10 s and at 60 s (memory must not grow with length).
The content is a drifting, zooming noise texture with a moving bright square, so encoders do
real motion work and decode costs are those of natural video (within ~2x).
"""
from __future__ import annotations

import fractions
import json
import os

import av
import numpy as np


def _texture(seed: int, h: int, w: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  small = rng.random((h // 16 + 2, w // 16 + 2, 3))
  big = np.kron(small, np.ones((16, 16, 1)))  # blocky noise, then smoothed: natural-ish spectra
  for axis in (0, 1):
    big = (big + np.roll(big, 7, axis) + np.roll(big, -7, axis)) / 3
  fine = rng.random(big.shape) * 0.25
  return (255 * np.clip(0.8 * big + fine - 0.05, 0, 1)).astype(np.uint8)


def write_video(path: str, frames: int, h: int, w: int, codec: str = "libx264", rate=30,
                gop: int = 200, seed: int = 0, options: dict | None = None,
                container_options: dict | None = None) -> None:
  tex = _texture(seed, 2 * h, 2 * w)
  with av.open(path, "w", options=container_options or {}) as c:
    s = c.add_stream(codec, rate=rate)
    s.height, s.width, s.pix_fmt = h, w, "yuv420p"
    s.gop_size = gop
    if codec != "libx264":
      s.bit_rate = int(6e6 * h * w / (1280 * 720)) + 500_000
    s.options = dict(options or {})
    for t in range(frames):
      dy = int(h / 2 + h / 3 * np.sin(t / 47 + seed))
      dx = int(w / 2 + w / 3 * np.cos(t / 61 + seed))
      img = tex[dy:dy + h, dx:dx + w].copy()
      y, x = int((t * 3) % (h - 40)), int((t * 5) % (w - 40))
      img[y:y + 40, x:x + 40] = 255 - img[y:y + 40, x:x + 40]
      frame = av.VideoFrame.from_ndarray(img, format="rgb24")
      for p in s.encode(frame):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def _audio_only(path: str) -> None:
  with av.open(path, "w") as c:
    s = c.add_stream("aac", rate=16000)
    for _ in range(20):
      fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
      fr.sample_rate = 16000
      for p in s.encode(fr):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


H264 = {"preset": "veryfast", "bf": "3", "sc_threshold": "0"}


def build(out: str, scale: float = 1.0, log=print) -> dict:
  """Writes the corpus (or reuses a complete one); returns its manifest."""
  manifest_path = os.path.join(out, "manifest.json")
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
    if manifest.get("scale") == scale:
      return manifest
  train, length = os.path.join(out, "train"), os.path.join(out, "length")
  os.makedirs(train, exist_ok=True)
  os.makedirs(length, exist_ok=True)
  n = lambda k: max(1, int(round(k * scale)))
  jobs = []
  for i in range(n(10)):
    jobs.append((f"h264_360p_{i:02d}.mp4", 300, 360, 640, "libx264", 30, 150 + (i * 37) % 101,
                 H264))
  for i in range(n(6)):
    jobs.append((f"h264_720p_{i:02d}.mp4", 300, 720, 1280, "libx264", 30, 150 + (i * 53) % 101,
                 H264))
  for i in range(n(3)):
    jobs.append((f"vp9_360p_{i:02d}.webm", 300, 360, 640, "libvpx-vp9", 30, 240,
                 {"deadline": "realtime", "cpu-used": "8"}))
  for i in range(n(2)):
    jobs.append((f"mpeg4_360p_{i:02d}.avi", 300, 360, 640, "mpeg4", 30, 180, {"bf": "2"}))
  jobs.append(("mpeg2_480p_00.ts", 300, 480, 720, "mpeg2video", fractions.Fraction(30000, 1001),
               200, {"bf": "2"}))
  for i in range(n(4)):
    jobs.append((f"short_{i:02d}.mp4", 40 + 5 * i, 240, 320, "libx264", 25, 250, H264))
  for k, (name, frames, h, w, codec, rate, gop, opts) in enumerate(jobs):
    path = os.path.join(train, name)
    if not os.path.exists(path):
      log(f"writing {name} ({w}x{h}, {frames} frames, keyframe every {gop})")
      write_video(path + ".tmp." + name.rsplit(".", 1)[1], frames, h, w, codec, rate, gop, k, opts)
      os.replace(path + ".tmp." + name.rsplit(".", 1)[1], path)
  # Broken files, made from real ones.
  src = open(os.path.join(train, "h264_360p_00.mp4"), "rb").read()
  open(os.path.join(train, "broken_header_lost.mp4"), "wb").write(src[:len(src) // 2])
  faststart = os.path.join(train, "broken_cut_faststart.mp4")
  write_video(faststart, 300, 360, 640, "libx264", 30, 200, 99, H264, {"movflags": "+faststart"})
  data = open(faststart, "rb").read()
  open(faststart, "wb").write(data[:int(len(data) * 0.6)])
  avi = open(os.path.join(train, "mpeg4_360p_00.avi"), "rb").read()
  open(os.path.join(train, "broken_cut.avi"), "wb").write(avi[:int(len(avi) * 0.7)])
  open(os.path.join(train, "broken_empty.mp4"), "wb").close()
  with open(os.path.join(train, "broken_text.mp4"), "w") as f:
    f.write("not a video\n" * 100)
  _audio_only(os.path.join(train, "broken_audio_only.mp4"))
  write_video(os.path.join(train, "broken_too_short.mp4"), 6, 240, 320, "libx264", 25, 250, 98,
              H264)
  for secs in (10, 60):
    path = os.path.join(length, f"h264_360p_{secs}s.mp4")
    if not os.path.exists(path):
      log(f"writing length/{os.path.basename(path)}")
      write_video(path, 30 * secs, 360, 640, "libx264", 30, 200, 7, H264)
  manifest = {"scale": scale, "train": sorted(os.listdir(train)),
              "broken": sorted(f for f in os.listdir(train) if f.startswith("broken_")),
              "bytes": sum(os.path.getsize(os.path.join(train, f)) for f in os.listdir(train))}
  with open(manifest_path, "w") as f:
    json.dump(manifest, f, indent=1)
  return manifest


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  _OUT = flags.DEFINE_string("out", "/tmp/video_corpus", "Folder to write (reused if complete).")
  _SCALE = flags.DEFINE_float("scale", 1.0, "Multiplies the number of videos of each kind.")

  def main(argv):
    del argv
    m = build(_OUT.value, _SCALE.value)
    print(f"{len(m['train'])} files ({len(m['broken'])} broken), {m['bytes'] / 2**20:.1f} MiB "
          f"under {_OUT.value}/train; length/ holds a 10 s and a 60 s 640x360 video")

  app.run(main)
