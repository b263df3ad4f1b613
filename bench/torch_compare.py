"""Our train step vs Hugging Face transformers' VideoMAEForPreTraining (PyTorch), process against
process.

  pip install -e .[torch]      # torch + transformers: optional, only for this comparison
  python bench/torch_compare.py [--which=tiny,vit_s] [--pairs=5] [--threads=2] [--out=F.json]
      [--ours_overrides=model.scan_unroll=16] [--ours_xla_flags=...]
  python bench/torch_compare.py --which=vit_s --threads=1 --profile_steps=3   # where the time goes

Every measurement is its own subprocess (bench/peer_step.py): one process times only our compiled
step, another only the HF step, and no process ever holds both frameworks (a same-process
comparison measures the fight between XLA's and torch's thread pools, not the frameworks: each
slowed the other 2-9x in earlier measurements). Per config the two run alternated, ours then HF,
`--pairs` times, each pinned to the same `--threads` cores (sched_setaffinity; torch also gets
torch.set_num_threads, XLA:CPU sizes its pool from the cores it may use). Each pair gives one
ratio HF median step / our median step (> 1: ours is faster); pairing keeps a ratio meaningful
when the machine's speed drifts between pairs. Reported: min / median / max of those ratios, by
wall time and by process CPU time, and each side's MFU against the matmul peak its own process
measured (2048^2 float32). With --profile_steps, each worker also runs that many steps under its
own profiler and a second table splits each side's op time per step into dense matmuls,
attention and the rest (bench/op_split.py; use --threads=1, where XLA's op times add up).

Read wall ratios only from a quiet machine: with other jobs on the cores, torch's spinning
threads and XLA's pool are hit differently and wall time mostly measures the neighbours.
"""
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS

_HERE = os.path.dirname(os.path.abspath(__file__))
_WORKER = os.path.join(_HERE, "peer_step.py")




def define_flags():
  """Command-line flags: defined only when this file is the program, so tests can import it."""
  flags.DEFINE_list("which", ["tiny", "vit_s"], "Configs (bench/peer_step.py --config).")
  flags.DEFINE_integer("pairs", 5, "Alternated (ours, HF) process pairs per config.")
  flags.DEFINE_integer("threads", 2, "Cores each process is pinned to (and torch threads).")
  flags.DEFINE_list("cpus", [], "The cores to pin to (default: the first --threads this "
                    "process may use).")
  flags.DEFINE_integer("warmup", 2, "Untimed steps per process.")
  flags.DEFINE_integer("steps", 5, "Timed steps per process.")
  flags.DEFINE_string("ours_remat", "none", "Our remat policy: none (like HF, which runs "
                      "without gradient checkpointing) or config (the config's own).")
  flags.DEFINE_string("hf_attention", "sdpa", "HF attn_implementation: sdpa | eager.")
  flags.DEFINE_string("ours_xla_flags", "", "XLA_FLAGS for our worker only (to try "
                      "XLA:CPU options process against process).")
  flags.DEFINE_list("ours_overrides", [], "key=value config overrides for our worker only "
                    "(e.g. model.scan_unroll=16); printed with the table.")
  flags.DEFINE_enum("hf_host_malloc", "framework", ["framework", "steady", "system"],
                    "glibc malloc of the HF worker: 'framework' = torch's default (glibc's); "
                    "'steady' gives it the heap our runs use on CPU (host_memory.py), to see "
                    "how much of the gap that setting alone explains.")
  flags.DEFINE_integer("profile_steps", 0, "Profiled steps per worker after the timed ones: "
                       "adds the matmul / attention / other table (use with --threads=1).")
  flags.DEFINE_integer("timeout", 1800, "Seconds per worker process.")
  flags.DEFINE_string("out", "", "Write every measurement and the summary as JSON here.")


def pinned_cpus(threads: int, cpus: list[str]) -> list[int]:
  allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  chosen = [int(c) for c in cpus] if cpus else allowed[:threads]
  if allowed and not set(chosen) <= set(allowed):
    raise app.UsageError(f"--cpus={chosen}: this process may only use {allowed}")
  return chosen


def run_worker(framework: str, config: str, cores: list[int]) -> dict:
  """One measurement in a fresh process, pinned to `cores`; its PEER_RESULT line, parsed."""
  cmd = [sys.executable, _WORKER, f"--framework={framework}", f"--config={config}",
         f"--threads={FLAGS.threads}", f"--warmup={FLAGS.warmup}", f"--steps={FLAGS.steps}",
         f"--ours_remat={FLAGS.ours_remat}", f"--hf_attention={FLAGS.hf_attention}",
         f"--profile_steps={FLAGS.profile_steps}"]
  if framework == "ours" and FLAGS.ours_overrides:
    cmd.append("--ours_overrides=" + ",".join(FLAGS.ours_overrides))
  if framework == "hf" and FLAGS.hf_host_malloc != "framework":
    cmd.append(f"--host_malloc={FLAGS.hf_host_malloc}")
  env = dict(os.environ, OMP_NUM_THREADS=str(FLAGS.threads))
  env.pop("XLA_FLAGS", None)  # no forced device counts: one CPU device, as HF has
  if framework == "ours" and FLAGS.ours_xla_flags:
    env["XLA_FLAGS"] = FLAGS.ours_xla_flags
  pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=FLAGS.timeout,
                        preexec_fn=pin)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("PEER_RESULT ")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"{framework} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  return check_clean(json.loads(lines[-1][len("PEER_RESULT "):]))


def check_clean(result: dict) -> dict:
  """Refuse a measurement taken in a process that also loaded the other framework."""
  other = "loaded_torch" if result["framework"] == "ours" else "loaded_jax"
  if result[other]:
    raise RuntimeError(f"the {result['framework']} worker loaded {other[len('loaded_'):]}: a "
                       "same-process measurement, refused")
  return result


def spread(values: list[float]) -> dict:
  return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def compare(config: str, pairs: int, measure, log=print) -> dict:
  """`pairs` alternated (ours, HF) measurements (`measure(framework)`, a process each); one ratio
  per pair, summarised as min / median / max."""
  done = []
  for i in range(pairs):
    ours = measure("ours")
    hf = measure("hf")
    pair = {"ours": ours, "hf": hf,
            "wall_ratio": hf["median_step_s"] / ours["median_step_s"],
            "cpu_ratio": hf["median_cpu_s"] / ours["median_cpu_s"]}
    done.append(pair)
    log(f"[{config}] pair {i + 1}/{pairs}: ours {1e3 * ours['median_step_s']:.0f} ms "
        f"(cpu {1e3 * ours['median_cpu_s']:.0f}), HF {1e3 * hf['median_step_s']:.0f} ms "
        f"(cpu {1e3 * hf['median_cpu_s']:.0f}); HF/ours wall {pair['wall_ratio']:.2f} "
        f"cpu {pair['cpu_ratio']:.2f}; load {ours['loadavg'][0]:.1f}")
  pairs = done
  med = lambda side, key: statistics.median(p[side][key] for p in pairs)  # noqa: E731
  return {
      "config": config, "pairs": pairs,
      "ours_step_ms": 1e3 * med("ours", "median_step_s"), "hf_step_ms": 1e3 * med("hf", "median_step_s"),
      "ours_cpu_ms": 1e3 * med("ours", "median_cpu_s"), "hf_cpu_ms": 1e3 * med("hf", "median_cpu_s"),
      "ours_mfu": med("ours", "mfu_vs_own_matmul"), "hf_mfu": med("hf", "mfu_vs_own_matmul"),
      "ours_peak_gflops": med("ours", "peak_flops") / 1e9,
      "hf_peak_gflops": med("hf", "peak_flops") / 1e9,
      "wall_ratio": spread([p["wall_ratio"] for p in pairs]),
      "cpu_ratio": spread([p["cpu_ratio"] for p in pairs]),
      "model_gflop": pairs[0]["ours"]["model_flops"] / 1e9,
      "op_ms": {side: {bucket: statistics.median(p[side]["op_ms"][bucket] for p in pairs)
                       for bucket in ("matmul", "attention", "other", "traced")}
                for side in ("ours", "hf")} if pairs[0]["ours"].get("op_ms") else None,
  }


def format_table(summaries: list[dict]) -> str:
  head = ("| config | GFLOP/step | ours ms (cpu ms) | HF ms (cpu ms) | HF/ours wall min / median / max "
          "| HF/ours cpu median | MFU ours / HF (own matmul peak, GFLOP/s) |")
  lines = [head, "| --- | --: | --: | --: | --: | --: | --: |"]
  for s in summaries:
    w, c = s["wall_ratio"], s["cpu_ratio"]
    lines.append(
        f"| {s['config']} | {s['model_gflop']:.1f} | {s['ours_step_ms']:.0f} ({s['ours_cpu_ms']:.0f}) "
        f"| {s['hf_step_ms']:.0f} ({s['hf_cpu_ms']:.0f}) | {w['min']:.2f} / **{w['median']:.2f}** / "
        f"{w['max']:.2f} | {c['median']:.2f} | {100 * s['ours_mfu']:.0f}% / {100 * s['hf_mfu']:.0f}% "
        f"({s['ours_peak_gflops']:.0f} / {s['hf_peak_gflops']:.0f}) |")
  return "\n".join(lines)


def format_split(summaries: list[dict]) -> str:
  """Op time per step by bucket, ours / HF (medians over pairs), and HF / ours per bucket."""
  lines = ["| config | bucket | ours ms | HF ms | HF / ours |", "| --- | --- | --: | --: | --: |"]
  for s in summaries:
    if not s.get("op_ms"):
      continue
    ours, hf = s["op_ms"]["ours"], s["op_ms"]["hf"]
    for bucket in ("matmul", "attention", "other", "traced"):
      ratio = hf[bucket] / ours[bucket] if ours[bucket] else float("nan")
      lines.append(f"| {s['config']} | {bucket} | {ours[bucket]:.0f} | {hf[bucket]:.0f} "
                   f"| {ratio:.2f} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import importlib.util  # pylint: disable=g-import-not-at-top
  if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers")):
    print("torch and transformers are not importable: pip install -e .[torch]")
    return 1
  cores = pinned_cpus(FLAGS.threads, FLAGS.cpus)
  start, load = time.perf_counter(), os.getloadavg()
  summaries = [compare(c, FLAGS.pairs, lambda fw, c=c: run_worker(fw, c, cores))
               for c in FLAGS.which]
  print(f"\n{FLAGS.pairs} alternated process pairs per config, each pinned to cores {cores}, "
        f"{FLAGS.steps} timed steps after {FLAGS.warmup} warm-up; ours remat={FLAGS.ours_remat}, "
        f"HF attention={FLAGS.hf_attention}; ours XLA_FLAGS={FLAGS.ours_xla_flags!r}, overrides "
        f"{FLAGS.ours_overrides}; medians over "
        "pairs. Ratios > 1: ours is faster.")
  print(format_table(summaries))
  if FLAGS.profile_steps:
    print(f"\nOp time per step under each framework's profiler ({FLAGS.profile_steps} steps, "
          "bench/op_split.py buckets; medians over pairs):")
    if FLAGS.threads > 1:
      print(f"(at --threads={FLAGS.threads} XLA:CPU runs independent ops side by side: our op "
            "times overlap and add up to more than the step; --threads=1 gives a split that adds up)")
    print(format_split(summaries))
  print(f"load average {load} -> {os.getloadavg()}; {time.perf_counter() - start:.0f} s")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump({"summaries": summaries, "cores": cores, "load_start": load,
                 "load_end": os.getloadavg()}, f, indent=1)
  return 0


if __name__ == "__main__":
  define_flags()
  sys.exit(app.run(main))
