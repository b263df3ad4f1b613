"""The step's matmul kernels under each of XLA:CPU's dot libraries, and against PyTorch's.

  python bench/dot_paths.py [--config=vit_s] [--rounds=30] [--paths=ynn,eigen,xnn,onednn]
  python bench/dot_paths.py --torch_pairs=5 [--threads=2]

The kernels are those of the compiled train step of a bench config (bench/cpu_configs.py): each
Dense of the decoder, forward + input gradient + weight gradient over batch x tokens rows, and the
decoder's attention core (layerlock_jax.models.vit.softmax_attention, forward + backward).

1. Without --torch_pairs: every kernel is compiled once per XLA:CPU dot library, in ONE process,
   and the variants are alternated round by round (as bench/option_ab.py does for whole steps), so
   the machine's drift hits all alike. The libraries are chosen with XLA compile options:
     ynn     XLA:CPU's default (YNNPACK fusions for dots and reductions)
     eigen   YNNPACK off: XLA's own dot thunks (Eigen contractions) and loop emitters
     xnn     XNNPACK for dots, YNNPACK off
     onednn  oneDNN for dots (XLA cannot store such a program in the persistent compilation
             cache: "ToProto is not implemented for thunk kind: onednn-fusion")
   It prints GFLOP/s per kernel and library and the per-round ratio to the default.
2. With --torch_pairs=N: N alternated pairs of processes, one timing the kernels under XLA:CPU's
   default, one under PyTorch (its matmuls and SDPA, the kernels HF VideoMAE's step runs), each
   pinned to the same --threads cores and never loading the other framework. Prints per kernel
   the GFLOP/s of each side and the per-pair ratio (min / median / max).

Why: the train step's dense matmuls are most of its FLOPs, so the library that runs them sets
most of the gap to another framework's step (bench/README.md, "Against Hugging Face").
"""
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))  # the repo root: layerlock_jax without installing
sys.path.insert(0, _HERE)                   # cpu_configs

FLAGS = flags.FLAGS

PATHS = {
    "ynn": {},
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "xnn": {"xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
            "xla_cpu_experimental_ynn_fusion_type": ""},
    "onednn": {"xla_cpu_use_onednn": True,
               "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
}


def define_flags():
  """Defined when run as a script only, so that tests can import this module next to others."""
  flags.DEFINE_enum("config", "vit_s", ["tiny", "vit_s"], "Which bench config's kernels.")
  flags.DEFINE_list("paths", list(PATHS), f"XLA:CPU dot libraries to compare: {list(PATHS)}.")
  flags.DEFINE_integer("rounds", 30, "Rounds; each runs every variant of a kernel once.")
  flags.DEFINE_integer("torch_pairs", 0, "Alternated (XLA, PyTorch) process pairs instead.")
  flags.DEFINE_integer("threads", 2, "With --torch_pairs: cores each worker is pinned to.")
  flags.DEFINE_enum("worker", None, ["xla", "torch"], "Internal: time one framework, print JSON.")


def kernels(config) -> list[dict]:
  """The decoder's matmul kernels of `config`'s step: name, shapes and model FLOPs."""
  frames, size = config.data.num_frames, config.data.image_size
  pt, ph, pw = config.model.patch_size
  tokens = (frames // pt) * (size // ph) * (size // pw)
  dec = config.model.decoder
  rows = config.batch_size * tokens
  out = []
  for name, d_in, d_out in (("qkv", dec.width, 3 * dec.width), ("mlp1", dec.width, dec.mlp_dim),
                            ("mlp2", dec.mlp_dim, dec.width)):
    # forward, input gradient and weight gradient: three matmuls of 2 * rows * d_in * d_out
    out.append({"name": f"dense {name} {rows}x{d_in}->{d_out} fwd+bwd", "kind": "dense",
                "shape": (rows, d_in, d_out), "flops": 3 * 2 * rows * d_in * d_out})
  head_dim = dec.width // dec.num_heads
  shape = (config.batch_size, tokens, dec.num_heads, head_dim)
  # q k^T and p v forward, four matmuls of the same size backward
  flops = 6 * 2 * config.batch_size * dec.num_heads * tokens * tokens * head_dim
  out.append({"name": f"attention {shape} fwd+bwd", "kind": "attention", "shape": shape,
              "flops": flops})
  return out


def _xla_fn(kernel):
  """(jitted fn, args) for one kernel; the function returns every gradient it computes."""
  import jax  # pylint: disable=g-import-not-at-top
  from layerlock_jax.models import vit  # pylint: disable=g-import-not-at-top
  keys = jax.random.split(jax.random.key(0), 4)
  if kernel["kind"] == "dense":
    rows, d_in, d_out = kernel["shape"]
    x = jax.random.normal(keys[0], (rows, d_in))
    w = jax.random.normal(keys[1], (d_in, d_out)) * d_in ** -0.5
    g = jax.random.normal(keys[2], (rows, d_out))

    def dense(x, w, g):
      y, pull = jax.vjp(lambda x, w: x @ w, x, w)
      return (y, *pull(g))
    return jax.jit(dense), (x, w, g)
  q, k, v, g = (jax.random.normal(key, kernel["shape"]) for key in keys)

  def attention(q, k, v, g):
    y, pull = jax.vjp(vit.softmax_attention, q, k, v)
    return (y, *pull(g))
  return jax.jit(attention), (q, k, v, g)


def alternate(variants: dict, rounds: int) -> dict[str, list[float]]:
  """Seconds per call of each variant (name -> callable), in a rotating order per round."""
  names = list(variants)
  times = {name: [] for name in names}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      start = time.perf_counter()
      variants[name]()
      times[name].append(time.perf_counter() - start)
  return times


def compare_paths(config, paths: list[str], rounds: int) -> list[dict]:
  """Per kernel: GFLOP/s of each XLA:CPU dot library (median call) and the per-round ratio of
  the default's time to the library's (> 1: the library is faster). A library XLA refuses is
  reported with its error instead."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(paths) - set(PATHS))
  if unknown:
    raise ValueError(f"unknown dot libraries {unknown}; choose from {list(PATHS)}")
  paths = ["ynn"] + [p for p in paths if p != "ynn"]  # the default is the reference
  rows = []
  for kernel in kernels(config):
    fn, args = _xla_fn(kernel)
    compiled, refused = {}, {}
    for path in paths:
      try:
        compiled[path] = fn.lower(*args).compile(compiler_options=PATHS[path] or None)
      except jax.errors.JaxRuntimeError as e:
        refused[path] = str(e).splitlines()[0]
    calls = {p: (lambda c=c: jax.block_until_ready(c(*args))) for p, c in compiled.items()}
    # A library that computes other numbers is not a faster library: every output is checked
    # against the default's (the first call, outside the timing).
    outputs = {p: [np.asarray(o) for o in call()] for p, call in calls.items()}
    times = alternate(calls, rounds)
    row = {"kernel": kernel["name"], "flops": kernel["flops"], "refused": refused, "paths": {}}
    for path, ts in times.items():
      ratios = [a / b for a, b in zip(times["ynn"], ts)]
      diff = max(float(np.max(np.abs(a - b) / (1 + np.abs(b))))
                 for a, b in zip(outputs[path], outputs["ynn"]))
      row["paths"][path] = {"gflops": kernel["flops"] / statistics.median(ts) / 1e9,
                            "ratio_median": statistics.median(ratios),
                            "ratio_min": min(ratios), "ratio_max": max(ratios),
                            "max_rel_diff": diff}
    rows.append(row)
  return rows


def format_paths(rows: list[dict]) -> str:
  paths = list(rows[0]["paths"]) if rows else []
  lines = ["| kernel | " + " | ".join(f"{p} GFLOP/s (default / {p})" for p in paths) + " |",
           "| --- |" + " --: |" * len(paths)]
  for row in rows:
    cells = []
    for p in paths:
      r = row["paths"][p]
      cells.append(f"{r['gflops']:.0f}" if p == "ynn" else
                   f"{r['gflops']:.0f} ({r['ratio_median']:.2f} [{r['ratio_min']:.2f}, "
                   f"{r['ratio_max']:.2f}])")
    lines.append(f"| {row['kernel']} | " + " | ".join(cells) + " |")
    for p in paths:
      if row["paths"][p]["max_rel_diff"] > 1e-3:
        lines.append(f"|   {p}: outputs differ from the default's by up to "
                     f"{row['paths'][p]['max_rel_diff']:.1e} (relative) |")
    for p, err in row["refused"].items():
      lines.append(f"|   {p}: refused by XLA: {err} |")
  return "\n".join(lines)


def torch_gflops(config, threads: int, rounds: int) -> dict[str, float]:
  """PyTorch's GFLOP/s (median call) on the same kernels: matmuls + autograd, SDPA."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  out = {}
  for kernel in kernels(config):
    if kernel["kind"] == "dense":
      rows, d_in, d_out = kernel["shape"]
      x = torch.randn(rows, d_in, requires_grad=True)
      w = (torch.randn(d_in, d_out) * d_in ** -0.5).requires_grad_()
      g = torch.randn(rows, d_out)

      def call(x=x, w=w, g=g):
        x.grad = w.grad = None
        (x @ w).backward(g)
    else:
      b, s, h, d = kernel["shape"]
      q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
      g = torch.randn(b, h, s, d)

      def call(q=q, k=k, v=v, g=g):
        q.grad = k.grad = v.grad = None
        torch.nn.functional.scaled_dot_product_attention(q, k, v).backward(g)
    call()
    ts = alternate({"t": call}, rounds)["t"]
    out[kernel["name"]] = kernel["flops"] / statistics.median(ts) / 1e9
  return out


def xla_gflops(config, rounds: int) -> dict[str, float]:
  """XLA:CPU's default library on the same kernels (GFLOP/s of the median call)."""
  out = {}
  for kernel in kernels(config):
    fn, args = _xla_fn(kernel)
    compiled = fn.lower(*args).compile()
    compiled(*args)
    ts = alternate({"x": lambda: [a.block_until_ready() for a in compiled(*args)]}, rounds)["x"]
    out[kernel["name"]] = kernel["flops"] / statistics.median(ts) / 1e9
  return out


def run_worker(framework: str, cores: list[int]) -> dict[str, float]:
  cmd = [sys.executable, os.path.abspath(__file__), f"--worker={framework}",
         f"--config={FLAGS.config}", f"--threads={FLAGS.threads}", f"--rounds={FLAGS.rounds}"]
  env = dict(os.environ, OMP_NUM_THREADS=str(FLAGS.threads))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800,
                        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("DOT_PATHS ")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"{framework} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  result = json.loads(lines[-1][len("DOT_PATHS "):])
  if result["loaded_other"]:
    raise RuntimeError(f"the {framework} worker loaded the other framework: refused")
  return result["gflops"]


def pair_table(pairs: list[tuple[dict, dict]]) -> list[dict]:
  """Per kernel over (xla, torch) GFLOP/s pairs: medians and the per-pair torch / XLA ratio."""
  rows = []
  for name in pairs[0][0]:
    ratios = [t[name] / x[name] for x, t in pairs]
    rows.append({"kernel": name, "xla_gflops": statistics.median(x[name] for x, _ in pairs),
                 "torch_gflops": statistics.median(t[name] for _, t in pairs),
                 "ratio_min": min(ratios), "ratio_median": statistics.median(ratios),
                 "ratio_max": max(ratios)})
  return rows


def main(argv):
  del argv
  import cpu_configs  # pylint: disable=g-import-not-at-top
  config = cpu_configs.get_config(FLAGS.config)
  if FLAGS.worker:
    gflops = (xla_gflops(config, FLAGS.rounds) if FLAGS.worker == "xla" else
              torch_gflops(config, FLAGS.threads, FLAGS.rounds))
    other = "torch" if FLAGS.worker == "xla" else "jax"
    print("DOT_PATHS " + json.dumps({"gflops": gflops, "loaded_other": other in sys.modules}))
    return
  if FLAGS.torch_pairs:
    allowed = sorted(os.sched_getaffinity(0))
    cores = allowed[:FLAGS.threads]
    pairs = []
    for i in range(FLAGS.torch_pairs):
      pairs.append((run_worker("xla", cores), run_worker("torch", cores)))
      print(f"pair {i + 1}/{FLAGS.torch_pairs} done; load {os.getloadavg()[0]:.1f}", flush=True)
    rows = pair_table(pairs)
    print(f"{FLAGS.config}: {FLAGS.torch_pairs} alternated process pairs pinned to {cores}, "
          f"{FLAGS.rounds} calls each; > 1: PyTorch faster")
    print("| kernel | XLA:CPU GFLOP/s | PyTorch GFLOP/s | PyTorch / XLA min / median / max |\n"
          "| --- | --: | --: | --: |")
    for r in rows:
      print(f"| {r['kernel']} | {r['xla_gflops']:.0f} | {r['torch_gflops']:.0f} | "
            f"{r['ratio_min']:.2f} / **{r['ratio_median']:.2f}** / {r['ratio_max']:.2f} |")
    print("DOT_PATHS " + json.dumps({"config": FLAGS.config, "pairs": rows}))
    return
  try:
    rows = compare_paths(config, FLAGS.paths, FLAGS.rounds)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(f"{FLAGS.config}: {FLAGS.rounds} rounds in one process, load {os.getloadavg()[0]:.1f}; "
        "ratios: default time / library time per round, median [min, max] (> 1: faster)")
  print(format_paths(rows))
  print("DOT_PATHS " + json.dumps({"config": FLAGS.config, "rows": rows}))


if __name__ == "__main__":
  define_flags()
  app.run(main)
