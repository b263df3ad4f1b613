"""`fork_from`: start a run from another run's checkpoint at step N, as if it had trained there.

Two runs whose configs differ only in what happens after step N (for example pixel MAE and
LayerLock, whose first freeze is at step N: until then both train the same model on the same
batches and masks with the same loss and learning rate) compute the same first N steps. A fork
restores the source's whole state at N (parameters, optimizer state, data position, progress)
and continues with its own config, so the N shared steps are paid once: the reproduction forks
every freezing arm from pixel MAE's checkpoint at its first freeze. tests/test_checkpoint_fork.py
checks that a forked run ends bit-identical to the same config trained from step 0.

What makes the first N steps the same is checked before anything is compiled
(IncompatibleCheckpointError naming the differences):
  * every config field is equal except FREE_FIELDS (bookkeeping that never reaches the
    computation) and the `layerlock.*` fields, and those only when
  * the two freeze tables agree on every stage that starts before N (same blocks frozen, same
    target), and this run's freezing is a fixed table (a convergence trigger decides from signals
    it would have had to measure during the source's steps).
The source run's metrics.jsonl rows up to step N are copied into the fork's workdir (they are the
rows the fork would have logged); its TensorBoard events are not.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil

import ml_collections

from layerlock_jax.checkpoint import manager as checkpoint
from layerlock_jax import plan

# Fields that never reach the computation of a step: where and how often to save, log and
# evaluate, compile caching, host memory, profiling, and the fork / init sources themselves.
FREE_FIELDS = ("fork_from", "init_from", "checkpoint_every", "keep_checkpoints", "keep_every",
               "eval_every", "log_every", "compile_cache_dir", "precompile_next_stage",
               "host_malloc", "profile_steps", "profile_all_processes")
# Fields that may differ when the freeze tables agree before the fork step.
SCHEDULE_PREFIX = "layerlock."


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = checkpoint.plain(value)
  return out


def _stages_before(config, step: int) -> list[dict]:
  return [dataclasses.asdict(s) for s in plan.freeze_table(config) if s.start_step < step]


def check_forkable(saved_config: dict, config, step: int, source: str):
  """Raise IncompatibleCheckpointError unless `config` trains its first `step` steps exactly like
  the run whose config was `saved_config` (the JSON saved with its checkpoint)."""
  mine = _flat(json.loads(config.to_json_best_effort()))
  theirs = _flat(saved_config)
  differ = sorted(k for k in set(mine) | set(theirs)
                  if mine.get(k) != theirs.get(k) and k not in FREE_FIELDS)
  problems = [f"{k}: source {theirs.get(k)!r} != this run {mine.get(k)!r}" for k in differ
              if not k.startswith(SCHEDULE_PREFIX)]
  if any(k.startswith(SCHEDULE_PREFIX) for k in differ):
    if config.layerlock.enabled and config.layerlock.trigger != "schedule":
      problems.append(f"layerlock.trigger={config.layerlock.trigger!r}: its freeze decisions "
                      f"come from signals measured during the source's steps; fork only runs "
                      "with a fixed freeze table")
    else:
      source_stages = _stages_before(ml_collections.ConfigDict(saved_config), step)
      my_stages = _stages_before(config, step)
      if source_stages != my_stages:
        problems.append(f"freeze tables before step {step}: source {source_stages} != this run "
                        f"{my_stages}")
  if problems:
    raise checkpoint.IncompatibleCheckpointError(
        f"--config.fork_from={source}: the source run's first {step} steps are not this run's, "
        "so a fork would not equal training from step 0 (nothing was changed). Differences: "
        + "; ".join(problems[:12]))


def restore(path: str, config, abstract_state, data_iter, workdir: str) -> checkpoint.Restored:
  """The source checkpoint's full state, for `config` (checked first) into `abstract_state`, with
  `data_iter` set to its data position; copies the source's metrics rows up to its step."""
  directory, step = checkpoint.resolve(path)
  ckpts = checkpoint.Checkpoints(directory, config, read_only=True)
  meta = ckpts.read_meta(step)
  ckpts.manager.close()
  check_forkable(meta["config"], config, step, path)
  restored = checkpoint.restore(os.path.join(directory, str(step)), config, abstract_state,
                                data_iter)
  source_metrics = os.path.join(os.path.dirname(directory), "metrics.jsonl")
  metrics = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(source_metrics) and not os.path.exists(metrics):
    shutil.copyfile(source_metrics, metrics + ".tmp")
    os.replace(metrics + ".tmp", metrics)  # MetricsLog cuts it back to rows <= step
  logging.info("forked from %s/%d (stage k=%d, %s)", directory, step,
               restored.spec.frozen_layers, restored.spec.target)
  return restored
