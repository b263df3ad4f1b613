"""LayerLock freezing benchmark: is freezing k blocks as cheap as the FLOP model says?

  python bench/freeze_bench.py [--config=bench/cpu_configs.py:freeze] [--ks=0,2,4] [--out=F.json]

For k = 0..K on one config (K = the config's freeze cap, floor(2/3 * depth)), in one process:
analytic training FLOPs per step (layerlock_jax/flops.py), measured step time of the StagePrograms'
compiled step, compiled temp memory, the analytic and measured saving against k = 0, and their
ratio realized/theoretical = (1 - t_k/t_0) / (1 - F_k/F_0). It also reads the layer-scan loops out
of each compiled step's HLO: a frozen prefix of k blocks must appear as one forward loop of k trips
and no backward loop of k trips (the prefix is never differentiated, only run).

Variants are compiled first and then timed round-robin (layerlock_jax/bench.py explains why).
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from layerlock_jax import bench
from layerlock_jax import config_defaults
from layerlock_jax import schedule
from layerlock_jax import train

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, "cpu_configs.py") + ":freeze",
    "Config file; override fields with --config.a.b=value.", lock_config=True)
_KS = flags.DEFINE_list("ks", [], "Frozen depths (default: 0..the config's freeze cap).")
_TARGETS = flags.DEFINE_list("targets", ["pixel"], "LayerLock targets to sweep: pixel, latent.")
_MIN_RATIO = flags.DEFINE_float("min_ratio", 0.9, "Realized/theoretical ratio reported as met.")
bench.define_timing_flags()
flags.FLAGS.set_default("rounds", 4)
flags.FLAGS.set_default("steps", 1)


def run(config, ks, targets, *, warmup, steps, rounds, log=print) -> dict:
  env = bench.environment()
  peak: dict = {}
  rows, loops = [], {}
  for target in targets:
    c = bench.with_overrides(config, layerlock__enabled=True, layerlock__target=target)
    trainer = train.StagePrograms(c)
    full = bench.init_params(trainer)
    variants = []
    for k in ks:
      if target == "latent" and k == 0:
        # The latent target needs a frozen block: its k=0 reference is the pixel step.
        c0 = bench.with_overrides(c, layerlock__target="pixel")
        v = bench.build_variant(f"freeze_{target}", "k=0", c0, 0, full_params=full, peak=peak)
      else:
        v = bench.build_variant(f"freeze_{target}", f"k={k}", c, k, trainer=trainer,
                                full_params=full, peak=peak)
      v.row["scan_loops"] = bench.scan_loops(v.compiled.as_text())
      log(f"  {target} k={k}: compiled in {v.row['compile_s']:.1f}s, "
          f"temp {v.row['temp_bytes'] / bench.MIB:.1f} MiB, loops {v.row['scan_loops']}")
      variants.append(v)
    log(f"  timing {len(variants)} variants ({rounds} rounds x {steps} steps) ...")
    bench.time_interleaved(variants, warmup=warmup, steps=steps, rounds=rounds)
    rows += [v.row for v in variants]
  bench.add_freeze_savings(rows)
  env["loadavg_end"] = os.getloadavg()
  env["cpu_peak_flops"] = peak
  return {"rows": rows, "environment": env}


def checks(rows, depth: int, min_ratio: float) -> list[str]:
  """Plain-language verdicts on the freezing criteria, per target group."""
  out = []
  for group in sorted({r["group"] for r in rows}):
    g = sorted((r for r in rows if r["group"] == group), key=lambda r: r["frozen_layers"])
    ratios = [r["realized_over_theoretical"] for r in g if r["frozen_layers"]]
    cpu_ratios = [r["realized_over_theoretical_cpu"] for r in g if r["frozen_layers"]]
    temps = [r["temp_bytes"] for r in g]
    falls = all(b < a for a, b in zip(temps, temps[1:]))
    verdict = lambda x: f"{x:.2f} ({'>=' if x >= min_ratio else '<'} {min_ratio})"
    out.append(f"{group}: realized/theoretical over all k (least-squares slope): wall "
               f"{verdict(bench.saving_fit(rows, group))}, CPU "
               f"{verdict(bench.saving_fit(rows, group, 'cpu_saving'))}")
    out.append(f"  at k={g[-1]['frozen_layers']}: wall {ratios[-1]:.2f}, CPU {cpu_ratios[-1]:.2f}; "
               f"lowest single k: wall {min(ratios):.2f}, CPU {min(cpu_ratios):.2f}")
    out.append(f"  temp memory {'falls' if falls else 'does NOT fall'} with every k "
               f"({temps[0] / bench.MIB:.0f} -> {temps[-1] / bench.MIB:.0f} MiB)")
    for r in g:
      k, fwd, bwd = r["frozen_layers"], r["scan_loops"]["forward"], r["scan_loops"]["backward"]
      # A backward loop of k trips can only be the frozen prefix unless a trained stack (the
      # trainable encoder blocks or the decoder) happens to have k blocks as well.
      trained = [depth - k] + ([] if r.get("decoder_depth", 0) < 2 else [r["decoder_depth"]])
      if k and k not in trained and k in bwd:
        out.append(f"  k={k}: a backward loop of {k} trips exists: the prefix IS differentiated")
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.configure("auto")  # the heap a real run uses (before JAX starts its threads)
  config = _CONFIG.value
  depth = config_defaults.encoder_depth(config)
  ks = [int(k) for k in _KS.value] or list(range(schedule.frozen_cap(config, depth) + 1))
  f = flags.FLAGS
  result = run(config, ks, _TARGETS.value, warmup=f.warmup, steps=f.steps, rounds=f.rounds)
  for r in result["rows"]:
    r["decoder_depth"] = config.model.decoder.depth
  m = config.model
  print(f"\nconfig: width {m.width} depth {depth} heads {m.num_heads} mlp {m.mlp_dim}, clip "
        f"{config.data.num_frames}x{config.data.image_size}^2 tubelet {tuple(m.patch_size)}, "
        f"mask {config.masking.ratio}, batch {config.batch_size}, remat {m.remat_policy}, "
        f"dtype {m.dtype}, decoder {m.decoder.width}w x {m.decoder.depth}")
  print(bench.format_table(result["rows"]))
  print("\n" + bench.format_freeze_table(result["rows"]))
  print("\n" + "\n".join(checks(result["rows"], depth, _MIN_RATIO.value)))
  env = result["environment"]
  print(f"\nload average {env['loadavg_start']} -> {env['loadavg_end']}")
  bench.write_json(result, f.out)


if __name__ == "__main__":
  sys.exit(app.run(main))
