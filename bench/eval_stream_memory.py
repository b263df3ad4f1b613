"""Peak host memory of the streaming probes (evaluation/streaming.py) against the clip count.

  python bench/eval_stream_memory.py [--clips=500,5000] [--views=1x1] [--batch=50] [--epochs=1]
      [--in_memory]

Each row is a fresh process that builds a micro encoder (width 16, depth 2, random init) and
runs `streaming.evaluate` on N train and N test clips of the embedded gratings source (4 frames
at 16 px, tiny so the run is cheap), then reports its own peak RSS (getrusage ru_maxrss). With
--in_memory, rows for the in-memory path (depthwise.load_eval_data + FeatureExtractor, what the
depth-wise table reads) follow for contrast. Prints a table; the figures belong in notes, not
in code.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(clips: int):
  from layerlock_jax import config_defaults  # pylint: disable=g-import-not-at-top
  c = config_defaults.base_config()
  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 16, 2, 32, 2
  m.patch_size, m.posemb, m.remat_policy = (2, 8, 8), "learned_3d", "none"
  c.mesh.preset = "data_parallel"
  c.data.source = "gratings"
  c.data.num_frames, c.data.image_size, c.data.num_clips = 4, 16, clips
  return c


def child(mode: str, clips: int, views: str, batch: int, epochs: int) -> dict:
  from layerlock_jax import evaluate  # pylint: disable=g-import-not-at-top
  config = _config(clips)
  params = evaluate.random_init_params(config)
  start = time.perf_counter()
  if mode == "stream":
    from layerlock_jax.evaluation import streaming  # pylint: disable=g-import-not-at-top
    k, s = (int(v) for v in views.split("x"))
    result = streaming.evaluate(config, params, streaming.StreamSettings(
        batch_size=batch, epochs=epochs, views=streaming.Views(k, s), width=16, num_heads=2,
        progress_every_s=1e9), log=lambda _: None)
    top1 = result["tasks"]["colour"]["linear"]["top1"]
  else:
    from layerlock_jax.evaluation import depthwise  # pylint: disable=g-import-not-at-top
    from layerlock_jax.evaluation import features  # pylint: disable=g-import-not-at-top
    data = depthwise.load_eval_data(config, num_train=clips, num_test=clips)
    extract = features.FeatureExtractor(config, batch_size=batch)
    extract(params, data.train_videos, token_blocks=(1,))
    extract(params, data.test_videos, token_blocks=(1,))
    top1 = float("nan")
  peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return {"mode": mode, "clips": clips, "peak_mib": peak_kib / 1024,
          "seconds": time.perf_counter() - start, "colour_linear_top1": top1}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--clips", default="500,5000")
  parser.add_argument("--views", default="1x1")
  parser.add_argument("--batch", type=int, default=50)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--in_memory", action="store_true")
  parser.add_argument("--child", default="")
  args = parser.parse_args()
  if args.child:
    mode, clips = args.child.split(":")
    print(json.dumps(child(mode, int(clips), args.views, args.batch, args.epochs)))
    return
  modes = ["stream"] + (["in_memory"] if args.in_memory else [])
  rows = []
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  counts = [int(c) for c in args.clips.split(",")]
  # One unreported run first: it fills the persistent compilation cache, so every measured row
  # loads the same compiled programs (a cold compile's own memory would land in the first row).
  subprocess.run([sys.executable, os.path.abspath(__file__), f"--child=stream:{counts[0]}",
                  f"--views={args.views}", f"--batch={args.batch}", f"--epochs={args.epochs}"],
                 env=env, capture_output=True, text=True, check=True)
  for mode in modes:
    for clips in counts:
      out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={mode}:{clips}",
                            f"--views={args.views}", f"--batch={args.batch}",
                            f"--epochs={args.epochs}"], env=env, capture_output=True, text=True,
                           check=True)
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), platform.processor())
  print(f"CPU: {cpu}; views {args.views}, batch {args.batch}, epochs {args.epochs}; "
        f"N train + N test clips of gratings (4 x 16 x 16)")
  print(f"{'path':>10} {'clips N':>8} {'peak RSS MiB':>13} {'vs first':>9} {'seconds':>8} "
        f"{'colour top1':>12}")
  base = {}
  for r in rows:
    base.setdefault(r["mode"], r["peak_mib"])
    print(f"{r['mode']:>10} {r['clips']:>8} {r['peak_mib']:>13.1f} "
          f"{r['peak_mib'] / base[r['mode']] - 1:>+9.1%} {r['seconds']:>8.1f} "
          f"{r['colour_linear_top1']:>12.3f}")


if __name__ == "__main__":
  main()
