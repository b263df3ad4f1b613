r"""What a LayerLock stage switch costs the training loop, with and without compiling ahead.

  python bench/stage_switch_bench.py [--devices=4] [--repeats=1] [--total_steps=360] \
      [--pixel_steps=200] [--interval=80] [--out=F.json]

Each variant (config.precompile_next_stage False / True) trains configs/layerlock_tiny.py (by
default its first three stages: k = 0, 1, 2) through the real loop (train.run) in a fresh process
of its own, on `--devices` forced CPU devices, with NO persistent compilation cache, so every stage
program really compiles. The worker logs every step (log_every=1: each step is waited for) and
timestamps every loop iteration. Per stage boundary it reports:
  stall      the iteration that crosses the boundary (resplit + compile or waiting for the
             program compiled ahead + the first step), minus a steady step;
  steady     median step time in the stage before the boundary, outside any ahead compile;
  overlap    median step time while the ahead compile ran (its cost to the steps it overlaps);
  waited     Trainer.stats' wait_seconds: how long the main thread waited for the program.
A compile hidden completely needs a stage that lasts longer than the compile; with fewer spare
cores than the step uses, the overlapped steps slow down instead (that is the trade-off
compilation.ahead_helps decides by default).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)




def define_flags():
  """Command-line flags: defined only when this file is the program, so tests can import it."""
  flags.DEFINE_integer("devices", 4, "Forced CPU devices (data-parallel mesh).")
  flags.DEFINE_integer("repeats", 1, "Alternated (off, on) process pairs.")
  flags.DEFINE_integer("total_steps", 360, "Steps per run.")
  flags.DEFINE_integer("pixel_steps", 200, "layerlock.pixel_steps (first boundary).")
  flags.DEFINE_integer("interval", 80, "layerlock.interval (steps per later stage).")
  flags.DEFINE_string("out", "", "Write the measurements as JSON here.")
  flags.DEFINE_string("worker", "", "Internal: run one variant (off|on) and print JSON.")


def worker(ahead: bool) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from layerlock_jax import compilation  # pylint: disable=g-import-not-at-top
  from layerlock_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from layerlock_jax import train  # pylint: disable=g-import-not-at-top
  from layerlock_jax.trainer import Trainer  # pylint: disable=g-import-not-at-top
  import cpu_configs  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  compilation.enable_persistent_cache("")  # every stage program compiles for real
  config = cpu_configs.load_config_file("layerlock_tiny").get_config() 
  config.total_steps, config.log_every, config.checkpoint_every = FLAGS.total_steps, 1, 0
  config.layerlock.pixel_steps, config.layerlock.interval = FLAGS.pixel_steps, FLAGS.interval
  config.precompile_next_stage = ahead
  stamps = []
  global_batch = pipeline.global_batch

  def stamped(*args, **kwargs):  # called once per loop iteration, before the step
    stamps.append(time.perf_counter())
    return global_batch(*args, **kwargs)

  pipeline.global_batch = stamped
  with tempfile.TemporaryDirectory() as workdir:
    result = train.run(config, workdir)
  stamps.append(time.perf_counter())
  return {"ahead": ahead, "iteration_s": [b - a for a, b in zip(stamps, stamps[1:])],
          "programs": result.programs, "devices": jax.device_count(),
          "boundaries": sorted(s.start_step for s in Trainer(config).table[1:]
                               if s.start_step < config.total_steps)}


def summarise(run: dict) -> list[dict]:
  """Per boundary: steady step, stall, steps overlapped by the ahead compile (see the docstring).

  Iterations are labelled: a stage's first iteration is its boundary; in stage i, iterations
  before the (i+1)-th program's compile time has elapsed are "overlap" when compiling ahead; the
  rest are "steady". A boundary's reference step is the median steady step of the stages on both
  sides of it (both sides: the frozen depth changes the step time).
  """
  it, programs = run["iteration_s"], run["programs"]
  starts = [0] + list(run["boundaries"]) + [len(it)]
  label = ["steady"] * len(it)
  for i in range(len(starts) - 1):
    label[starts[i]] = "boundary"
    budget = programs[i + 1]["compile_seconds"] if run["ahead"] and i + 1 < len(programs) else 0
    t = 0.0
    for j in range(starts[i] + 1, starts[i + 1]):
      if t < budget:
        label[j] = "overlap"
      t += it[j]
  rows = []
  for i, b in enumerate(run["boundaries"]):
    window = range(starts[i] + 1, starts[i + 2])
    steady = [it[j] for j in window if label[j] == "steady"]
    steady_s = statistics.median(steady or [it[j] for j in window if label[j] != "boundary"])
    overlap = [it[j] for j in range(starts[i] + 1, b) if label[j] == "overlap"]
    prog = programs[i + 1] if i + 1 < len(programs) else {}
    rows.append({"boundary": b, "k": prog.get("frozen_layers"), "steady_ms": 1e3 * steady_s,
                 "stall_s": it[b] - steady_s,
                 "overlap_ms": 1e3 * statistics.median(overlap) if overlap else None,
                 "overlap_steps": len(overlap), "waited_s": prog.get("wait_seconds"),
                 "compile_s": prog.get("compile_seconds"), "ahead": prog.get("ahead")})
  return rows


def run_variant(ahead: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={FLAGS.devices}",
             PYTHONPATH=os.pathsep.join([_ROOT, os.path.join(_ROOT, "bench")]))
  cmd = [sys.executable, os.path.abspath(__file__), f"--worker={'on' if ahead else 'off'}",
         f"--total_steps={FLAGS.total_steps}", f"--pixel_steps={FLAGS.pixel_steps}",
         f"--interval={FLAGS.interval}"]
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("SWITCH_RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  run = json.loads(lines[-1][len("SWITCH_RESULT "):])
  run["process_wall_s"] = time.perf_counter() - start
  return run


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.configure("auto")  # the heap a real run uses (before JAX starts its threads)
  if FLAGS.worker:
    print("SWITCH_RESULT " + json.dumps(worker(FLAGS.worker == "on")), flush=True)
    return 0
  runs, load = [], os.getloadavg()
  for _ in range(FLAGS.repeats):
    for ahead in (False, True):
      run = run_variant(ahead)
      run["summary"] = summarise(run)
      runs.append(run)
  print(f"\n{FLAGS.devices} forced CPU devices on {os.cpu_count()} cores, configs/layerlock_tiny.py"
        f" with {FLAGS.total_steps} steps (boundaries {runs[0]['boundaries']}), no persistent cache.")
  print("| precompile_next_stage | boundary (k) | steady step ms | stall s | waited s | compile s "
        "| step ms while compiling ahead (steps) | process wall s |")
  print("| --- | --- | --: | --: | --: | --: | --: | --: |")
  for run in runs:
    for r in run["summary"]:
      overlap = "-" if r["overlap_ms"] is None else f"{r['overlap_ms']:.0f} ({r['overlap_steps']})"
      print(f"| {run['ahead']} | {r['boundary']} ({r['k']}) | {r['steady_ms']:.0f} | "
            f"{r['stall_s']:.2f} | {r['waited_s']:.2f} | {r['compile_s']:.1f} | {overlap} | "
            f"{run['process_wall_s']:.0f} |")
  print(f"load average {load} -> {os.getloadavg()}")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(runs, f, indent=1)
  return 0


if __name__ == "__main__":
  define_flags()
  sys.exit(app.run(main))
