"""The training loop, top to bottom: mesh -> data -> abstract state -> shardings -> sharded init or
restore -> stage loop (compile once per freeze stage) -> metrics -> checkpoints.

The run's central object (model, freeze table, shardings, compiled programs) is trainer.Trainer;
this file holds only the loop that drives it. One loop serves plain video MAE, LayerLock (progressive freezing + target switching), its
pixel-target and naive-latent baselines: they differ only in the freeze table and the StageSpec of
each stage, never in the loop.

Runs are resumable (checkpoint/manager.py): rerunning the same command on the same workdir restores the
latest complete checkpoint (state, data position, stage, progress), on whatever mesh the new run
has, and continues bit-identically; metrics.jsonl is cut back to the restored step. SIGTERM (or
JAX's preemption notice) checkpoints the step in flight and returns normally (exit status 0).

Long runs (guard.py, profiling.py): a non-finite loss stops the run with guard.NonFiniteError at the
next log boundary or save (no checkpoint is ever written from a non-finite state), and
config.profile_steps traces a few steps.
"""
import dataclasses
import json
import logging
import os
import time

import jax

from layerlock_jax.checkpoint import fork as checkpoint_fork
from layerlock_jax.checkpoint import manager as checkpoint
from layerlock_jax import compilation
from layerlock_jax.data import mixture
from layerlock_jax.data import pipeline
from layerlock_jax import guard as guard_lib
from layerlock_jax import hardware
from layerlock_jax.metrics_log import MetricsLog
from layerlock_jax.models import video_mae
from layerlock_jax import plan
from layerlock_jax import profiling
from layerlock_jax import state as state_lib
from layerlock_jax import train_step as step_lib
from layerlock_jax.trainer import Trainer, note


@dataclasses.dataclass
class RunResult:
  state: state_lib.TrainState
  last_metrics: dict
  compiles: int               # compiled train-step programs (== distinct freeze stages run)
  compile_seconds: float
  start_step: int = 0         # > 0 when the run resumed from a checkpoint
  preempted: bool = False     # stopped early by SIGTERM / a preemption notice (checkpoint saved)
  programs: list = dataclasses.field(default_factory=list)  # Trainer.stats


def stop_if_diverged(guard, ckpts, state=None):
  """Raise guard.NonFiniteError if the run diverged (and, given `state`, if it is not finite)."""
  stop = guard.stopped_at()
  what = "loss"
  if stop is None and state is not None and not guard_lib.state_is_finite(state):
    stop, what = int(jax.device_get(state.step)), "parameters"
  if stop is not None:
    raise guard_lib.NonFiniteError(stop, ckpts.last_complete_step(), ckpts.directory, what)


def write_config(config, workdir: str):
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def run(config, workdir: str, devices=None, make_evaluator=None) -> RunResult:
  """Train `config` in `workdir` (the main job of `python -m layerlock_jax.main`).

  Rerunning the same command on the same workdir resumes from its latest complete checkpoint.
  make_evaluator: the in-training evaluation's factory, called once as `make_evaluator(trainer)`
  at the first evaluation; what it returns is called as `evaluate(state, step) -> metrics` every
  config.eval_every steps and at the end. The caller chooses it (main.py passes
  evaluation.periodic.make_evaluator), so the loop itself imports no evaluation code; None with
  eval_every > 0 logs that no evaluation will run.
  """
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  note("mesh")
  trainer = Trainer(config, devices)
  note("mesh %s over %d devices; rules preset %r", dict(trainer.mesh.shape),
       trainer.mesh.devices.size, config.mesh.preset)
  logging.info("freeze schedule:\n%s", plan.format_table(trainer.table, config.total_steps))
  logging.info("parameters: %s", f"{video_mae.count_params(trainer.boxed_abstract):,}")

  note("data")
  data_iter = pipeline.make_train_iterator(
      config.data, seed=config.seed, global_batch_size=config.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())

  # Restore before anything is written: a workdir holding another model's checkpoint raises here,
  # with config.json, metrics and checkpoints untouched and nothing compiled yet.
  note("init or restore")
  ckpts = checkpoint.Checkpoints.in_workdir(workdir, config)
  try:
    restored = ckpts.restore_latest(trainer.abstract_state, data_iter)
  except Exception:
    ckpts.close()
    raise
  if restored is not None:
    start_step, state, spec, progress = (restored.step, restored.state, restored.spec,
                                         restored.progress)
    trainer.restore_trigger(progress.trigger)
    if config.init_from or config.fork_from:
      logging.info("init_from / fork_from ignored: resuming this workdir's own checkpoint")
  elif config.fork_from:  # the source's first N steps are this run's (checked in there)
    restored = checkpoint_fork.restore(config.fork_from, config, trainer.abstract_state,
                                        data_iter, workdir)
    start_step, state, spec, progress = (restored.step, restored.state, restored.spec,
                                         restored.progress)
  else:
    start_step, spec, progress = 0, trainer.spec_at(0), checkpoint.Progress()
    state = trainer.init_state(spec, init_from=config.init_from)
  if is_main:
    write_config(config, workdir)

  log = MetricsLog(workdir, is_main=is_main, total_steps=config.total_steps,
                   start_step=start_step)
  peak_flops = hardware.combined_peak_flops(trainer.mesh.devices.flat, config.model.dtype)
  preemption = checkpoint.Preemption(ckpts.manager)
  guard = guard_lib.Guard(config.skip_nonfinite_updates, trainer.replicated)
  profiler = profiling.Profiler(config, workdir)

  def save(done, state, spec, *, wait=False):
    """Checkpoint only finite states: a diverged run stops instead of overwriting good ones."""
    stop_if_diverged(guard, ckpts, state)
    ckpts.save(done, state, spec, data_iter, progress, wait=wait)

  if config.eval_every and make_evaluator is None:
    logging.warning("eval_every=%d but no evaluator was passed to train.run: no in-training "
                    "evaluation", config.eval_every)
  compile_ahead = config.precompile_next_stage
  if compile_ahead is None:
    compile_ahead = compilation.ahead_helps(trainer.mesh.devices.flat[0].platform)
  note("training from step %d", start_step)
  last, preempted, evaluate = {}, False, None
  try:
    clock = time.perf_counter()
    for step in range(start_step, config.total_steps):
      new_spec = trainer.spec_at(step)
      if new_spec != spec:
        note("step %d: freezing %d blocks, target %s", step, new_spec.frozen_layers,
             new_spec.target)
        state = trainer.resplit(state, new_spec, from_spec=spec)
        spec = new_spec
      batch = next(data_iter)
      video = pipeline.global_batch({"video": batch["video"]}, trainer.video_sharding)["video"]
      fresh = not trainer.is_compiled(spec)
      step_fn = trainer.step_fn(spec, state, video)
      if fresh:
        if compile_ahead:  # the next stage compiles while this one trains
          trainer.compile_next_stage(step, spec, video)
        log.reset_clock(step)
        clock = time.perf_counter()  # compiling is not training time
      profiler.before_step(step + 1)
      state, metrics = step_fn(state, video)
      done = step + 1
      guard.observe(metrics, done)
      profiler.after_step(done, state)
      progress.clips_seen += config.batch_size
      if trainer.trigger is not None:
        trainer.check_convergence(done, metrics)
        progress.trigger = trainer.trigger.state.to_json()
      if done % config.log_every == 0 or done == config.total_steps:
        metrics = jax.device_get(metrics)  # waits for the step: the time up to here was training
        now = time.perf_counter()
        progress.train_seconds += now - clock
        clock = now
        metrics.update(frozen_layers=spec.frozen_layers, target=spec.target,
                       clips_seen=progress.clips_seen, train_seconds=progress.train_seconds,
                       **pipeline.bad_input_metrics(),
                       **mixture.clip_counts(config.data, progress.clips_seen))
        if trainer.trigger is not None:
          metrics["freeze_signal"] = trainer.trigger.state.last_signal
        last = log.write(done, metrics, batch_size=config.batch_size, peak_flops=peak_flops,
                         flops_per_step=trainer.flops_per_step(spec))
        stop_if_diverged(guard, ckpts)  # after logging: the bad step's row is in metrics.jsonl
      if make_evaluator and config.eval_every and (done % config.eval_every == 0
                                                   or done == config.total_steps):
        progress.train_seconds += time.perf_counter() - clock
        if evaluate is None:
          evaluate = make_evaluator(trainer)
        eval_metrics = evaluate(state, done)
        if eval_metrics:
          log.write(done, eval_metrics, batch_size=config.batch_size)
        clock = time.perf_counter()  # evaluating is not training time
      # Saved with `spec`, the split `state` is in; a resume re-splits if the schedule differs.
      if done < config.total_steps and preemption.reached(done):
        note("preempted: checkpointing step %d and stopping", done)
        save(done, state, spec, wait=True)
        preempted = True
        break
      if config.checkpoint_every and done % config.checkpoint_every == 0:
        progress.train_seconds += time.perf_counter() - clock
        save(done, state, spec)
        clock = time.perf_counter()  # saving is not training time
    if not preempted and start_step < config.total_steps:
      save(config.total_steps, state, spec)
  finally:
    # Also on errors: pending async writes finish (or fail loudly) and SIGTERM goes back to
    # its previous handler.
    note("waiting for checkpoint writes")
    profiler.stop()
    # The last batch lives in grain's shared memory: drop it before the workers stop, or its
    # block outlives the program (resource_tracker's "leaked shared_memory objects").
    batch = video = None
    data_iter.close()  # stops grain worker processes and frees their shared memory
    preemption.close()
    log.close()
    ckpts.close()  # last: raises CheckpointWriteError if an asynchronous write failed
  if preempted or start_step >= config.total_steps:
    if start_step >= config.total_steps:
      note("nothing to do: the checkpoint is at step %d of %d", start_step, config.total_steps)
    return RunResult(state, last, trainer.compiles, trainer.compile_seconds,
                     start_step=start_step, preempted=preempted, programs=trainer.stats)
  note("done: %d steps, %d compiled stages, %.1fs compiling", config.total_steps,
       trainer.compiles, trainer.compile_seconds)
  collapsed = step_lib.looks_collapsed(last)
  if collapsed:
    logging.warning("final feature_spread %.3g < %.2g: the encoder's tokens are nearly all the "
                    "same vector (collapsed)", last["feature_spread"], step_lib.COLLAPSE_SPREAD)
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump({"final": last, "collapsed": collapsed, "compiles": trainer.compiles,
                 "compile_seconds": trainer.compile_seconds, "resumed_from": start_step,
                 "forked_from": config.fork_from or None,
                 "compile_cache_dir": jax.config.jax_compilation_cache_dir,
                 "precompile_next_stage": compile_ahead,
                 "programs": trainer.stats,
                 "freeze_table": [dataclasses.asdict(s) for s in trainer.table]}, f, indent=2)
  return RunResult(state, last, trainer.compiles, trainer.compile_seconds, start_step=start_step,
                   programs=trainer.stats)
