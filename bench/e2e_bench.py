r"""What a training run sustains (loader + step + logging + periodic checkpoints) against the bare step.

  python bench/e2e_bench.py [--config=configs/tiny.py] [--steps=40,140] [--checkpoint_every=50] \
      [--bare_steps=20] [--out=F.json]

Run row: train.run (the real loop of `python -m layerlock_jax.main`) twice on fresh workdirs, for
N1 and N2 steps with the same logging and checkpoint cadence. Everything a run pays once (JAX
start-up, mesh, data source, init, loading the step program from the persistent compilation
cache, the last checkpoint) is the same in both, so (T(N2) - T(N1)) / (N2 - N1) is what one more
step of a real run costs, with its share of data loading, metric logging and periodic checkpoint
saves. total_steps is baked into the step program (its LR schedule), so each run compiles (or
loads) its own: each run's compile seconds are taken out of its T.
Bare row: the same compiled step (bench/common.py's build_variant), on one resident batch,
timed back to back. The ratio run/bare is the loop's overhead. Wall and process-CPU seconds are
both reported; on a shared machine trust the CPU figures.
"""
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from layerlock_jax import cli  # noqa: E402  pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "tiny.py"), "Config (plain MAE keeps one stage).",
    lock_config=True)
_STEPS = flags.DEFINE_list("steps", ["40", "140"], "N1,N2: steps of the two timed runs.")
_CKPT = flags.DEFINE_integer("checkpoint_every", 50, "Checkpoint cadence of both runs.")
_LOG = flags.DEFINE_integer("log_every", 0, "Logging cadence (0: the config's).")
_BARE = flags.DEFINE_integer("bare_steps", 20, "Timed bare steps (after 2 warm-up steps).")
_OUT = flags.DEFINE_string("out", "", "Write the rows as JSON here.")


def timed_run(config, steps: int) -> tuple[float, float]:
  from layerlock_jax import train  # pylint: disable=g-import-not-at-top
  c = config.copy_and_resolve_references()
  c.total_steps = steps
  with tempfile.TemporaryDirectory() as workdir:
    start, cpu = time.perf_counter(), time.process_time()
    result = train.run(c, workdir)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  # total_steps is part of the step program (the LR schedule), so N1 and N2 compile different
  # programs: take each run's own compile time out rather than hoping both hit the cache.
  return (wall - sum(p["compile_seconds"] for p in result.programs),
          cpu - sum(p["compile_cpu_seconds"] for p in result.programs))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.configure("auto")  # the heap a real run uses (before JAX starts its threads)
  import logging  # pylint: disable=g-import-not-at-top
  logging.getLogger().setLevel(logging.WARNING)
  from layerlock_jax import compilation  # pylint: disable=g-import-not-at-top
  compilation.enable_persistent_cache(compilation.AUTO)  # a second invocation loads, not compiles
  import common  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value.copy_and_resolve_references()
  config.checkpoint_every = _CKPT.value
  if _LOG.value:
    config.log_every = _LOG.value
  config.eval_every = 0
  n1, n2 = (int(s) for s in _STEPS.value)
  (w1, c1), (w2, c2) = timed_run(config, n1), timed_run(config, n2)
  run_wall, run_cpu = (w2 - w1) / (n2 - n1), (c2 - c1) / (n2 - n1)

  variant = common.build_variant("bare", "step", config)
  for _ in range(2):
    variant.step()
  for _ in range(_BARE.value):
    start, cpu = time.perf_counter(), time.process_time()
    variant.step()
    variant.times.append(time.perf_counter() - start)
    variant.cpu_times.append(time.process_time() - cpu)
  bare_wall, bare_cpu = statistics.median(variant.times), statistics.median(variant.cpu_times)

  b = config.batch_size
  rows = [
      {"row": f"run: loader + step + log every {config.log_every} + checkpoint every "
              f"{config.checkpoint_every}", "ms_per_step": 1e3 * run_wall,
       "cpu_ms_per_step": 1e3 * run_cpu, "clips_per_s": b / run_wall},
      {"row": "bare compiled step", "ms_per_step": 1e3 * bare_wall,
       "cpu_ms_per_step": 1e3 * bare_cpu, "clips_per_s": b / bare_wall},
  ]
  print(f"\n{config.data.source}, batch {b}; run row = (T({n2}) - T({n1})) / {n2 - n1} steps")
  print("| row | ms/step | cpu ms/step | clips/s |")
  print("| --- | --: | --: | --: |")
  for r in rows:
    print(f"| {r['row']} | {r['ms_per_step']:.1f} | {r['cpu_ms_per_step']:.1f} | "
          f"{r['clips_per_s']:.1f} |")
  print(f"run / bare: wall {run_wall / bare_wall:.2f}, cpu {run_cpu / bare_cpu:.2f}; "
        f"load average {os.getloadavg()}")
  if _OUT.value:
    import json  # pylint: disable=g-import-not-at-top
    with open(_OUT.value, "w") as f:
      json.dump({"rows": rows, "runs": {n1: [w1, c1], n2: [w2, c2]}}, f, indent=1)
  return 0


if __name__ == "__main__":
  cli.run(main)
