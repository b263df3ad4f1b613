"""Standalone evaluation of a run's checkpoint: depth-wise probes, CKA, collapse, plots.

  python -m layerlock_jax.evaluate [--config=configs/tiny.py] --workdir=DIR [--step=N]
      [--num_clips=512] [--task_source=gratings] [--attentive_steps=500] [--random_baseline]

Without --config, DIR/config.json is used (e.g. for a model imported by layerlock_jax.weights).
Loads the parameters (not the optimizer state) of checkpoint step N (default: the latest) from
DIR/checkpoints, runs the frozen encoder on `num_clips` train-split and `num_clips` test-split
clips of config.data (or of the other embedded labelled set with --task_source; same frames and
size), and writes to DIR/eval/:
  step_N[_SOURCE].json         the depth-wise table (depthwise.depthwise_analysis), plus the
                               same for the model at random initialisation with --random_baseline
  step_N[_SOURCE]_probe.png    probe accuracy per block and task (random init dashed)
  step_N[_SOURCE]_cka.png      linear / RBF CKA between depths
  step_N[_SOURCE]_collapse.png effective rank, normalised std, token cosine per block
  loss_curve.png               DIR/metrics.jsonl with the freeze-stage boundaries
The encoder parameters are only read. Results are deterministic for a given --seed.

  python -m layerlock_jax.evaluate --workdir=DIR --stream [--config=... --config.data.X=...]
      [--num_train=0] [--num_test=0] [--batch_size=32] [--epochs=2] [--temporal_clips=2]
      [--spatial_crops=3] [--block=0] [--feature_cache=PATH]

--stream trains a linear and an attentive probe of one block on batches that flow through the
frozen encoder (evaluation/streaming.py): data-parallel over every device and process (run the
same command on each, as for training), memory bounded by the batch, a progress line with ETA,
test-time views with averaged logits, top-1 and top-5; writes DIR/eval/step_N[_SOURCE]_stream.json.
"""
import json
import logging
import math
import os
import sys
from typing import Any, Sequence

import jax
import flax.linen as nn

from layerlock_jax import config_defaults
from layerlock_jax import schedule
from layerlock_jax.evaluation import depthwise
from layerlock_jax.evaluation import plots
from layerlock_jax.models import video_mae


def _jsonable(x: Any) -> Any:
  """NaN / inf become None: strict JSON has no NaN, and readers other than Python choke on it."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def random_init_params(config) -> dict:
  """The model's parameters at initialisation from config.seed (the "untrained" reference)."""
  model = video_mae.VideoMAE(config)
  return jax.jit(lambda key: nn.unbox(model.init(key)))(jax.random.key(config.seed))


def load_checkpoint_state(config, workdir: str, step: int | None = None):
  """(step, TrainState) of a run's checkpoint (latest if `step` is None), on this host's devices."""
  from layerlock_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from layerlock_jax import train  # pylint: disable=g-import-not-at-top
  path = workdir if step is None else os.path.join(workdir, checkpoint.CHECKPOINTS, str(step))
  restored = checkpoint.restore(path, train.StagePrograms(config))
  return restored.step, restored.state


def load_checkpoint_params(config, workdir: str, step: int | None = None):
  """(step, full parameter tree) of a checkpoint, without its optimizer state: what evaluation
  needs, and all that an imported encoder (layerlock_jax.weights) holds."""
  from layerlock_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from layerlock_jax import checkpoint_params  # pylint: disable=g-import-not-at-top
  path = workdir if step is None else os.path.join(workdir, checkpoint.CHECKPOINTS, str(step))
  step, _, params = checkpoint_params.restore_params(path, config=config)
  return step, params


def write_evaluation(result: dict, out_dir: str, name: str, *,
                     metrics_path: str | None = None, config=None) -> dict[str, str]:
  """Writes NAME.json and the PNGs for a result of `depthwise.evaluate_params` (optionally with
  result["random_init"]); the loss curve too when `metrics_path` exists. Returns {kind: path}."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, f"{name}.json")}
  with open(paths["json"], "w") as f:
    json.dump(_jsonable(result), f, indent=1)
  reference = result.get("random_init")
  paths["probe"] = plots.plot_probe_accuracy(
      result, os.path.join(out_dir, f"{name}_probe.png"), reference=reference,
      title=f"{name}: decodability per block on {result.get('task_source', '?')}")
  paths["cka"] = plots.plot_cka(result, os.path.join(out_dir, f"{name}_cka.png"),
                                title=f"{name}: CKA between depths (test clips)")
  paths["collapse"] = plots.plot_collapse(result, os.path.join(out_dir, f"{name}_collapse.png"),
                                          reference=reference, title=f"{name}: collapse statistics")
  if metrics_path and os.path.exists(metrics_path):
    rows = plots.read_metrics(metrics_path)
    stages = None
    if config is not None:
      table = schedule.freeze_table(config, config_defaults.encoder_depth(config))
      stages = [(s.start_step, s.frozen_layers, s.target) for s in table]
    if any(isinstance(r.get("loss"), (int, float)) for r in rows):
      paths["loss_curve"] = plots.plot_loss_curve(
          rows, os.path.join(out_dir, "loss_curve.png"), stages=stages)
  return paths


def run_evaluation(config, workdir: str, *, step: int | None = None, num_clips: int = 512,
                   task_source: str | None = None, seed: int = 0, attentive_steps: int = 500,
                   random_baseline: bool = False, params: Any = None,
                   tasks: Sequence[str] | None = None) -> dict[str, Any]:
  """The CLI's work: load (or take `params` with `step`), evaluate, write. Returns
  {"step", "result", "paths"}."""
  if params is None:
    step, params = load_checkpoint_params(config, workdir, step)
  elif step is None:
    raise ValueError("pass `step` together with in-memory `params`")
  num_clips = min(int(num_clips), int(config.data.num_clips))
  data = depthwise.load_eval_data(config, num_train=num_clips, num_test=num_clips,
                                  task_source=task_source, tasks=tasks)
  attentive = dict(attentive_blocks=() if attentive_steps <= 0 else None,
                   attentive_kwargs={"steps": attentive_steps} if attentive_steps > 0 else None)
  result = depthwise.evaluate_params(config, params, data=data, seed=seed, **attentive)
  result["step"] = int(step)
  if random_baseline:
    result["random_init"] = depthwise.evaluate_params(
        config, random_init_params(config), data=data, seed=seed, **attentive)
  name = f"step_{int(step)}"
  if task_source and task_source != config.data.source:
    name += f"_{task_source}"
  paths = write_evaluation(result, os.path.join(workdir, "eval"), name,
                           metrics_path=os.path.join(workdir, "metrics.jsonl"), config=config)
  return {"step": int(step), "result": result, "paths": paths}


def format_table(result: dict) -> str:
  """The per-block rows as a fixed-width text table (linear-probe accuracy per task and the
  collapse numbers), for the log."""
  tasks = list(result["tasks"])
  head = ["block"] + [f"lin/{t}"[:14] for t in tasks] + ["eff_rank", "norm_std", "tok_cos",
                                                          "collapsed"]
  lines = ["  ".join(f"{h:>14}" for h in head)]
  for row in result["rows"]:
    cells = [row["name"]] + [f"{row[f'linear/{t}']:.3f}" for t in tasks]
    cells += [f"{row.get('effective_rank', float('nan')):.2f}",
              f"{row.get('pooled_normalized_std', float('nan')):.3f}",
              f"{row.get('token_cosine_similarity', float('nan')):.3f}",
              str(row.get("collapsed"))]
    lines.append("  ".join(f"{c:>14}" for c in cells))
  chance = "  ".join(f"{t}={result['tasks'][t]['chance']:.3f}" for t in tasks)
  return "\n".join(lines) + f"\nchance (majority class): {chance}"


def _define_flags():
  # Defined only when run as a program: tests import this module next to layerlock_jax.main,
  # whose --config flag would otherwise be defined twice.
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "The run's config file (as for training).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "The run's directory (checkpoints, metrics.jsonl).")
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
  flags.DEFINE_integer("num_clips", 512, "Clips per split (probe fit on train, scored on test).")
  flags.DEFINE_string("task_source", "", "Labelled source to probe on (default: config.data's), "
                      "e.g. gratings or moving_mnist; rendered at the model's frames and size.")
  flags.DEFINE_list("tasks", [], "Labels to probe (default: all labels of the source).")
  flags.DEFINE_integer("seed", 0, "Seed of the probes (initialisation, minibatch order).")
  flags.DEFINE_integer("attentive_steps", 500, "Attentive-probe steps at the last block "
                       "(0: skip the attentive probe).")
  flags.DEFINE_bool("stream", False, "Streaming linear + attentive probes of one block "
                    "(evaluation/streaming.py) instead of the depth-wise table.")
  flags.DEFINE_integer("num_train", 0, "--stream: probe-training clips, a stratified seeded "
                       "subset (0: the whole train split).")
  flags.DEFINE_integer("num_test", 0, "--stream: test clips, likewise (0: the whole test split).")
  flags.DEFINE_integer("batch_size", 32, "--stream: global batch (a multiple of the mesh's "
                       "batch split).")
  flags.DEFINE_integer("epochs", 2, "--stream: passes over the probe-training clips.")
  flags.DEFINE_integer("temporal_clips", 1, "--stream: test views in time.")
  flags.DEFINE_integer("spatial_crops", 1, "--stream: test views in space.")
  flags.DEFINE_integer("window_frames", 0, "--stream: frames the test views are cut from "
                       "(0: num_frames x temporal_clips).")
  flags.DEFINE_integer("window_size", 0, "--stream: pixels the test views are cut from (0: "
                       "image_size for one crop, else 8/7 of it).")
  flags.DEFINE_integer("block", 0, "--stream: encoder block read (0: the 4DS depth-0.95 rule).")
  flags.DEFINE_float("probe_lr", 1e-3, "--stream: probes' peak learning rate (AdamW, cosine).")
  flags.DEFINE_integer("probe_width", 64, "--stream: attentive readout width.")
  flags.DEFINE_integer("probe_heads", 4, "--stream: attentive readout heads.")
  flags.DEFINE_integer("read_threads", 4, "--stream: clip-reading threads per process.")
  flags.DEFINE_string("feature_cache", "", "--stream: folder for the probe-training features "
                      "(shared by all processes); later epochs and runs read them.")
  flags.DEFINE_bool("random_baseline", True, "Also evaluate the model at random initialisation "
                    "(same data and probes) as the reference line.")
  return flags.FLAGS


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  flags = sys.modules[__name__].FLAGS
  if not flags.workdir:
    print("--workdir is required", file=sys.stderr)
    sys.exit(2)
  from layerlock_jax import distributed  # pylint: disable=g-import-not-at-top
  try:  # joins the other processes (launch/ scripts, JAX_* env) before JAX starts; else no-op
    distributed.initialize(distributed.resolve())
  except (distributed.DistributedError, RuntimeError) as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  config = flags.config
  if config is None:  # e.g. an imported model: the workdir's own config.json describes it
    from layerlock_jax.weights import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    config = workdir_lib.load_config(os.path.expanduser(flags.workdir))
  if flags.stream:
    _main_stream(flags, config)
    return
  out = run_evaluation(config, os.path.expanduser(flags.workdir), step=flags.step,
                       num_clips=flags.num_clips, task_source=flags.task_source or None,
                       seed=flags.seed, attentive_steps=flags.attentive_steps,
                       random_baseline=flags.random_baseline, tasks=flags.tasks or None)
  result = out["result"]
  print(f"step {out['step']} on {result['task_source']}:")
  print(format_table(result))
  for task, t in result["tasks"].items():
    if t["attentive"]:
      print(f"attentive probe {task}: " + ", ".join(
          f"block {b}: {acc:.3f}" for b, acc in t["attentive"].items()))
  if "random_init" in result:
    print("random initialisation:")
    print(format_table(result["random_init"]))
  for kind, path in out["paths"].items():
    print(f"wrote {kind}: {path}")


def _main_stream(flags, config) -> None:
  from layerlock_jax.evaluation import streaming  # pylint: disable=g-import-not-at-top
  settings = streaming.StreamSettings(
      batch_size=flags.batch_size, epochs=flags.epochs, num_train=flags.num_train,
      num_test=flags.num_test, block=flags.block, tasks=tuple(flags.tasks) or None,
      lr=flags.probe_lr, width=flags.probe_width, num_heads=flags.probe_heads, seed=flags.seed,
      read_threads=flags.read_threads, feature_cache=flags.feature_cache,
      views=streaming.Views(flags.temporal_clips, flags.spatial_crops, flags.window_frames,
                            flags.window_size))
  try:
    out = streaming.run(config, os.path.expanduser(flags.workdir), settings, step=flags.step,
                        task_source=flags.task_source or None, log=print)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  print(f"step {out['step']}:")
  print(streaming.format_table(out["result"]))
  if jax.process_index() == 0:
    print(f"wrote json: {out['path']}")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  FLAGS = _define_flags()
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
