"""Our step against itself with one thing changed: two compiled variants alternated in ONE process.

  python bench/option_ab.py --config=vit_s --b_overrides=model.scan_unroll=12 [--rounds=20]
  python bench/option_ab.py --config=vit_s \
      --b_xla_options=xla_cpu_use_onednn=true,xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT

Variant A is the config's step; variant B is the same step with config overrides and/or XLA
compile options (the DebugOptions fields XLA_FLAGS sets, but for B's compile only). A third
variant, A again (compiled on its own), is the null comparison: its ratio to A is what this
machine's noise alone produces, so a B/A difference inside the null's spread is no difference.
Each round runs every variant once, in a rotating order; the ratios are taken per round.

Why one process, when bench/torch_compare.py insists on a process per side: that rule is for two
frameworks, whose thread pools fight when they share a process. Two programs of the same XLA
client share one pool and never run at once, and alternating them step by step makes the
machine's drift (on shared 2-core machines, 10-30% from minute to minute) hit both alike,
which separate processes a minute apart cannot. What it cannot compare: options XLA reads once
per process (thread counts, XLA_FLAGS' --xla_force_host_platform_device_count); use
torch_compare.py --ours_xla_flags for those.

Configs (--config): tiny = configs/tiny.py; vit_s = bench/cpu_configs.py:vit_s. Prints a table
and one JSON line (OPTION_AB ...).
"""
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))  # the repo root: layerlock_jax without installing
sys.path.insert(0, _HERE)                   # cpu_configs

FLAGS = flags.FLAGS


def define_flags():
  """Defined when run as a script only, so that tests can import this module next to others."""
  flags.DEFINE_enum("config", "vit_s", ["tiny", "vit_s"], "Which config.")
  flags.DEFINE_string("remat", "none", "Remat policy of both variants: 'none' (as peer_step.py "
                      "times it) or 'config' (the config's own).")
  flags.DEFINE_list("b_overrides", [], "key=value config overrides of variant B.")
  flags.DEFINE_list("b_xla_options", [], "key=value XLA compile options of variant B (true/false "
                    "for booleans; enum values by their proto names).")
  flags.DEFINE_integer("rounds", 20, "Rounds; each runs every variant once.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps per variant after compiling.")
  flags.DEFINE_bool("null", True, "Also time A against a second compile of A.")


def parse_options(items) -> dict:
  """['k=v', ...] -> {k: v} with 'true' / 'false' as booleans and integers as ints."""
  options = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise app.UsageError(f"--b_xla_options: {item!r} is not key=value")
    low = value.lower()
    options[key] = (low == "true") if low in ("true", "false") else (
        int(value) if value.lstrip("-").isdigit() else value)
  return options


def compiling_with(options: dict):
  """Context manager: every jax `Lowered.compile` inside it gets these compile options.

  Trainer lowers and compiles its step internally (layerlock_jax/train.py); this hands
  B's options to that compile without a benchmark-only knob in the library.
  """
  import contextlib  # pylint: disable=g-import-not-at-top
  from jax import stages  # pylint: disable=g-import-not-at-top

  @contextlib.contextmanager
  def patch():
    original = stages.Lowered.compile

    def compile_with(self, compiler_options=None, **kwargs):
      return original(self, compiler_options={**options, **(compiler_options or {})} or None,
                      **kwargs)
    stages.Lowered.compile = compile_with
    try:
      yield
    finally:
      stages.Lowered.compile = original
  return patch()


def summarise(times: dict[str, list[float]]) -> dict:
  """Per variant min / quartile / median ms; per-round ratio A / X (> 1: X faster)."""
  out = {}
  for name, ts in times.items():
    q25 = statistics.quantiles(ts, n=4)[0] if len(ts) > 1 else ts[0]
    out[name] = {"min_ms": 1e3 * min(ts), "q25_ms": 1e3 * q25,
                 "median_ms": 1e3 * statistics.median(ts)}
    if name != "A":
      ratios = [a / x for a, x in zip(times["A"], ts)]
      out[name].update(ratio_median=statistics.median(ratios), ratio_min=min(ratios),
                       ratio_max=max(ratios))
  return out


def format_table(summary: dict) -> str:
  lines = ["variant   min ms   q25 ms   median ms   A / variant per round: median [min, max]"]
  for name, row in summary.items():
    ratio = ("-" if "ratio_median" not in row else
             f"{row['ratio_median']:.3f} [{row['ratio_min']:.3f}, {row['ratio_max']:.3f}]")
    lines.append(f"{name:<9}{row['min_ms']:7.0f}  {row['q25_ms']:7.0f}  {row['median_ms']:10.0f}"
                 f"   {ratio}")
  return "\n".join(lines)


def main(argv):
  del argv
  import cpu_configs  # pylint: disable=g-import-not-at-top
  options = parse_options(FLAGS.b_xla_options)
  config_a = cpu_configs.get_config(FLAGS.config, remat=FLAGS.remat)
  try:
    config_b = cpu_configs.get_config(FLAGS.config, remat=FLAGS.remat,
                                      overrides=FLAGS.b_overrides)
  except ValueError as e:
    raise app.UsageError(f"--b_overrides: {e}") from None
  except KeyError as e:
    raise app.UsageError(f"--b_overrides: no config field {e}") from None
  if not options and config_b.to_json() == config_a.to_json():
    raise app.UsageError("variant B is variant A: give --b_overrides or --b_xla_options")

  import common  # pylint: disable=g-import-not-at-top
  from layerlock_jax import compilation  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  compilation.enable_persistent_cache(compilation.AUTO)
  jax.config.update("jax_num_cpu_devices", 1)
  variants = {"A": common.build_variant("ab", "A", config_a)}
  try:
    with compiling_with(options):
      variants["B"] = common.build_variant("ab", "B", config_b)
  except jax.errors.JaxRuntimeError as e:
    raise app.UsageError(f"--b_xla_options {options}: XLA refused them: {e}") from None
  if FLAGS.null:
    # A fresh Trainer: its own jit, state and buffers (the executable may come from the
    # persistent cache: the same code, which is the point).
    variants["A again"] = common.build_variant("ab", "A again", config_a)
  for variant in variants.values():
    for _ in range(FLAGS.warmup):
      variant.step()
  names = list(variants)
  times = {name: [] for name in names}
  for r in range(FLAGS.rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      start = time.perf_counter()
      variants[name].step()
      times[name].append(time.perf_counter() - start)
  summary = summarise(times)
  print(f"{FLAGS.config}: B = overrides {FLAGS.b_overrides}, XLA options {options}; "
        f"{FLAGS.rounds} rounds, load {os.getloadavg()[0]:.1f}")
  print(format_table(summary))
  print("OPTION_AB " + json.dumps({"config": FLAGS.config, "overrides": FLAGS.b_overrides,
                                   "xla_options": options, "rounds": FLAGS.rounds,
                                   "summary": summary}))


if __name__ == "__main__":
  define_flags()
  app.run(main)
