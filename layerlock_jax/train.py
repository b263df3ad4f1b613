"""The training loop, top to bottom: mesh -> data -> abstract state -> shardings -> sharded init or
restore -> stage loop (compile once per freeze stage) -> metrics -> checkpoints.

One loop serves plain video MAE, LayerLock (progressive freezing + target switching), its
pixel-target and naive-latent baselines: they differ only in the freeze table and the StageSpec of
each stage, never in the loop.

Runs are resumable (checkpoint.py): rerunning the same command on the same workdir restores the
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

import flax.linen as nn
import jax
import numpy as np

from layerlock_jax import checkpoint
from layerlock_jax import checkpoint_fork
from layerlock_jax import checkpoint_params
from layerlock_jax import compilation
from layerlock_jax import distributed
from layerlock_jax import flops
from layerlock_jax import freeze_trigger
from layerlock_jax import guard as guard_lib
from layerlock_jax import hardware
from layerlock_jax import optimizer as optim
from layerlock_jax import profiling
from layerlock_jax import schedule
from layerlock_jax import sharding
from layerlock_jax import state as state_lib
from layerlock_jax import vjepa
from layerlock_jax import train_step as step_lib
from layerlock_jax.data import mixture
from layerlock_jax.data import pipeline
from layerlock_jax.metrics_log import MetricsLog
from layerlock_jax.models import video_mae


def note(msg: str, *args):
  """Phase banner: the log shows where a run is (and where it hung)."""
  logging.info("=== " + msg, *args)


@dataclasses.dataclass
class RunResult:
  state: state_lib.TrainState
  last_metrics: dict
  compiles: int               # compiled train-step programs (== distinct freeze stages run)
  compile_seconds: float
  start_step: int = 0         # > 0 when the run resumed from a checkpoint
  preempted: bool = False     # stopped early by SIGTERM / a preemption notice (checkpoint saved)
  programs: list = dataclasses.field(default_factory=list)  # StagePrograms.stats


class StagePrograms:
  """The compiled programs of a run, one set per freeze stage, and what they are built from.

  Everything derived from the config once (model, freeze table, schedules, optimizer, mesh and
  shardings), the train state's constructors in the run's layout, and the per-stage programs:
  init, resplit and step, each compiled once (ahead of time when it helps) and cached.
  """

  def __init__(self, config, devices=None):
    self.config = config
    self.mesh = sharding.make_mesh(config.mesh, devices)
    self.rules = sharding.axis_rules(config.mesh)
    self.model = video_mae.VideoMAE(config)
    # Convergence-triggered freezing decides the freeze table while training; otherwise it is
    # known in full now.
    ll = config.layerlock
    self.trigger = None
    if ll.enabled and ll.get("trigger", "schedule") == "convergence":
      self.trigger = freeze_trigger.ConvergenceTrigger(
          config, schedule.frozen_cap(config, self.model.encoder_depth))
    self._build_schedule()
    self.latent_weight_fn = schedule.naive_latent_weight_fn(config)
    self.video_sharding = sharding.batch_sharding(self.mesh, self.rules, 5)
    self.replicated = sharding.replicated(self.mesh)
    # Abstract parameters: shapes, dtypes and logical axes without allocating anything.
    self.boxed_abstract = jax.eval_shape(self.model.init, jax.random.key(config.seed))
    self.abstract_params = nn.unbox(self.boxed_abstract)
    self.param_shardings = sharding.param_shardings(self.boxed_abstract, self.mesh, self.rules)
    self._step_fns = {}
    self._resplit_fns = {}
    self._ahead = compilation.AheadCompiler()
    self.compile_seconds = 0.0
    # One row per compiled stage program: what it costs (analytic FLOPs, compiled buffer sizes).
    self.stats: list[dict] = []

  def _build_schedule(self):
    """Freeze table, LR schedule and optimizer. The LR's mini-warmups sit at the table's target
    switches, so a newly decided freeze rebuilds all three; programs already compiled belong to
    earlier stages, whose learning rates the new boundary does not change."""
    decided = self.trigger.events if self.trigger else ()
    self.table = schedule.freeze_table(self.config, self.model.encoder_depth, decided=decided)
    self.learning_rate_fn = schedule.learning_rate_fn(self.config, self.table)
    self.tx = optim.make_optimizer(self.config.optimizer, self.learning_rate_fn)

  def restore_trigger(self, saved: dict):
    """Continue the convergence trigger from a checkpoint's `Progress.trigger`."""
    if self.trigger is not None and saved:
      self.trigger.state = freeze_trigger.TriggerState.from_json(saved)
      self._build_schedule()

  def check_convergence(self, done: int, metrics: dict) -> bool:
    """After step `done`: let the trigger look at the trainable blocks' norms (a host sync, but
    only every `check_every` steps). True when it decided a freeze starting at step `done`."""
    norms = metrics.pop(step_lib.LAYER_NORMS, None)
    if self.trigger is None or norms is None or not self.trigger.due(done):
      return False
    event = self.trigger.observe(done, [float(x) for x in jax.device_get(norms)])
    if event is None:
      return False
    self._build_schedule()
    note("step %d: the next block's norm has plateaued; freeze table now:\n%s", done,
         schedule.format_table(self.table, self.config.total_steps))
    return True

  # --- stages ----------------------------------------------------------------------------------
  def spec_at(self, step: int) -> state_lib.StageSpec:
    stage = self.table[schedule.stage_index_at(self.table, step)]
    return state_lib.stage_spec(self.config, stage.frozen_layers, stage.target)

  def new_state(self, full, spec, seed=None) -> state_lib.TrainState:
    """The step-0 state of `spec` from full parameters (arrays, or abstract ones under
    eval_shape): this run's optimizer, seed (config.seed unless given) and teacher."""
    return state_lib.TrainState.create(
        full, spec, seed=self.config.seed if seed is None else seed, tx=self.tx,
        teacher=vjepa.init_teacher(full, self.config))

  def state_shardings(self, spec):
    params_sh, _ = state_lib.partition(self.param_shardings, spec)
    abstract_trainable = jax.eval_shape(lambda p: state_lib.partition(p, spec)[0],
                                        self.abstract_params)
    opt_sh = sharding.opt_state_shardings(self.tx, abstract_trainable, params_sh, self.mesh)
    return state_lib.TrainState.create(
        self.param_shardings, spec, opt_state=opt_sh, step=self.replicated, seed=self.replicated,
        teacher=vjepa.init_teacher(self.param_shardings, self.config))

  def abstract_state(self, spec):
    """ShapeDtypeStructs (with shardings) of the train state at a stage: the restore target."""
    shapes = jax.eval_shape(lambda full: self.new_state(full, spec), self.abstract_params)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, self.state_shardings(spec))

  # --- init and stage switches, compiled with explicit output shardings -----------------------
  def init_state(self, spec) -> state_lib.TrainState:
    """Fresh parameters created directly in their sharded layout (never whole on one device)."""
    def build(key, seed):
      return self.new_state(nn.unbox(self.model.init(key)), spec, seed)
    # Not under activation_sharding: init needs only the output shardings, and flax's
    # DenseGeneral init reshapes boxed kernels in a way that logical constraints reject.
    # The seed goes in as an argument, not a constant: runs that differ only in their seed share
    # one init program (and its persistent-cache entry), as they share the step.
    return jax.jit(build, out_shardings=self.state_shardings(spec))(
        jax.random.key(self.config.seed), np.asarray(self.config.seed, np.uint32))

  def resplit(self, state, spec, from_spec=None) -> state_lib.TrainState:
    """`state` re-split for `spec`. With `from_spec` (the spec `state` is in) the compiled
    resplit is kept per (from, to) pair, and one compiled ahead (compile_next_stage) is used."""
    if from_spec is None:
      fn = self._resplit_program(spec)
    else:
      key = (from_spec, spec)
      if key not in self._resplit_fns:
        ahead = self._ahead.take(("resplit",) + key)
        self._resplit_fns[key] = ahead or self._resplit_program(spec)
      fn = self._resplit_fns[key]
    with sharding.activation_sharding(self.mesh, self.rules):
      return fn(state)

  def _resplit_program(self, spec, abstract=None):
    fn = jax.jit(lambda s: state_lib.resplit(s, spec, self.tx),
                 out_shardings=self.state_shardings(spec))
    if abstract is None:
      return fn
    with sharding.activation_sharding(self.mesh, self.rules):
      return fn.lower(abstract).compile()

  def step_fn(self, spec, state, video):
    """The compiled step of a stage (ahead-of-time compiled once, then cached).

    `state` and `video` may be abstract (ShapeDtypeStructs with shardings). If the program was
    compiled ahead (compile_next_stage), it is taken here; an error of that background compile
    is raised here, in the caller's thread.
    """
    if spec not in self._step_fns:
      start = time.perf_counter()
      ahead = self._ahead.take(("step", spec))
      compiled, seconds, cache = ahead or self._compile_step(spec, state, video)
      wait = time.perf_counter() - start
      self.compile_seconds += seconds
      # Processes finish compiling at different times; line them up before the stage's first
      # collective (XLA:CPU collectives give up after a fixed 30 s).
      distributed.barrier(f"compiled_stage_{spec.frozen_layers}_{len(self._step_fns)}",
                          timeout_s=max(600.0, 2 * seconds))
      note("compiled stage k=%d (%s) in %.1fs%s; waited %.1fs", spec.frozen_layers, spec.target,
           seconds, " ahead" if ahead else "", wait)
      self._step_fns[spec] = compiled
      row = program_stats(compiled, spec, seconds, self.flops_per_step(spec))
      row.update(cache, ahead=ahead is not None, wait_seconds=wait)
      self.stats.append(row)
    return self._step_fns[spec]

  def _compile_step(self, spec, state, video):
    """Lower and compile one stage's step: (program, seconds, {cache outcome, CPU seconds})."""
    fn = step_lib.make_train_step(self.model, self.config, spec, self.tx,
                                  self.learning_rate_fn, self.latent_weight_fn)
    shardings = self.state_shardings(spec)
    jitted = jax.jit(fn, in_shardings=(shardings, self.video_sharding),
                     out_shardings=(shardings, self.replicated), donate_argnums=0)
    start, cpu, events = time.perf_counter(), time.process_time(), compilation.cache_events()
    with sharding.activation_sharding(self.mesh, self.rules):
      lowered = jitted.lower(state, video)
      lowered_at = time.perf_counter()
      compiled = lowered.compile()  # on a cache hit: load + deserialise
    # Process CPU seconds: robust to a loaded machine, but it also counts whatever else the
    # process did meanwhile (training steps, when this runs ahead on a background thread).
    cache = {"cache": compilation.cache_outcome(events, compilation.cache_events()),
             "lower_seconds": lowered_at - start, "compile_cpu_seconds": time.process_time() - cpu}
    return compiled, time.perf_counter() - start, cache

  def compile_next_stage(self, step: int, spec, video) -> state_lib.StageSpec | None:
    """Start compiling, in the background, the resplit into and the step of the stage after the
    one active at `step` (if it starts before total_steps). Returns its spec, or None."""
    index = schedule.stage_index_at(self.table, step) + 1
    if index >= len(self.table) or self.table[index].start_step >= self.config.total_steps:
      return None
    nxt = self.spec_at(self.table[index].start_step)
    if nxt == spec or nxt in self._step_fns:
      return None
    abstract_now, abstract_next = self.abstract_state(spec), self.abstract_state(nxt)
    abstract_video = jax.ShapeDtypeStruct(video.shape, video.dtype, sharding=self.video_sharding)

    # Resplit first: it is needed first at the switch; then the (much longer) step compile.
    self._ahead.submit(("resplit", spec, nxt), lambda: self._resplit_program(nxt, abstract_now))
    self._ahead.submit(("step", nxt),
                       lambda: self._compile_step(nxt, abstract_next, abstract_video))
    note("compiling stage k=%d (%s) ahead, from step %d", nxt.frozen_layers, nxt.target, step)
    return nxt

  def flops_per_step(self, spec) -> float:
    """Analytic model FLOPs of one step at this stage (the MFU numerator; no remat recompute)."""
    return flops.step_flops(self.config, spec.frozen_layers)["model_flops"]

  @property
  def compiles(self) -> int:
    return len(self._step_fns)


def program_stats(compiled, spec, compile_seconds: float, model_flops: float) -> dict:
  """A compiled stage program's costs: analytic model FLOPs per step and the per-device buffer
  sizes XLA assigned (temp = activations and scratch live during the step). Bytes are None where
  the backend has no memory analysis."""
  mem = compiled.memory_analysis()
  row = {"frozen_layers": spec.frozen_layers, "target": spec.target,
         "compile_seconds": compile_seconds, "model_flops": model_flops}
  for key in ("temp", "argument", "output", "alias"):
    row[f"{key}_bytes"] = int(getattr(mem, f"{key}_size_in_bytes")) if mem else None
  return row


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


def run(config, workdir: str, devices=None, evaluator=None) -> RunResult:
  """Train `config` in `workdir` (the main job of `python -m layerlock_jax.main`).

  Rerunning the same command on the same workdir resumes from its latest complete checkpoint.
  evaluator: the in-training evaluation, called as `evaluator(programs, state, step) -> metrics`
  every config.eval_every steps and at the end. The caller builds it from the config (main.py
  passes evaluation.periodic's), so the loop itself imports no evaluation code; None with
  eval_every > 0 logs that no evaluation will run.
  """
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  note("mesh")
  programs = StagePrograms(config, devices)
  note("mesh %s over %d devices; rules preset %r", dict(programs.mesh.shape),
       programs.mesh.devices.size, config.mesh.preset)
  logging.info("freeze schedule:\n%s", schedule.format_table(programs.table, config.total_steps))
  logging.info("parameters: %s", f"{video_mae.count_params(programs.boxed_abstract):,}")

  note("data")
  data_iter = pipeline.make_train_iterator(
      config.data, seed=config.seed, global_batch_size=config.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())

  # Restore before anything is written: a workdir holding another model's checkpoint raises here,
  # with config.json, metrics and checkpoints untouched and nothing compiled yet.
  note("init or restore")
  ckpts = checkpoint.Checkpoints.in_workdir(workdir, config)
  try:
    restored = ckpts.restore_latest(programs, data_iter)
  except Exception:
    ckpts.close()
    raise
  if restored is not None:
    start_step, state, spec, progress = (restored.step, restored.state, restored.spec,
                                         restored.progress)
    programs.restore_trigger(progress.trigger)
    if config.init_from or config.fork_from:
      logging.info("init_from / fork_from ignored: resuming this workdir's own checkpoint")
  elif config.fork_from:  # the source's first N steps are this run's (checked in there)
    restored = checkpoint_fork.restore(config.fork_from, programs, data_iter, workdir)
    start_step, state, spec, progress = (restored.step, restored.state, restored.spec,
                                         restored.progress)
  else:
    start_step, spec, progress = 0, programs.spec_at(0), checkpoint.Progress()
    if config.init_from:
      state = checkpoint_params.init_from(config.init_from, programs, spec)
    else:
      state = programs.init_state(spec)
  if is_main:
    write_config(config, workdir)

  log = MetricsLog(workdir, is_main=is_main, total_steps=config.total_steps,
                   start_step=start_step)
  peak_flops = hardware.combined_peak_flops(programs.mesh.devices.flat, config.model.dtype)
  preemption = checkpoint.Preemption(ckpts.manager)
  guard = guard_lib.Guard(config.skip_nonfinite_updates, programs.replicated)
  profiler = profiling.Profiler(config, workdir)

  def save(done, state, spec, *, wait=False):
    """Checkpoint only finite states: a diverged run stops instead of overwriting good ones."""
    stop_if_diverged(guard, ckpts, state)
    ckpts.save(done, state, spec, data_iter, progress, wait=wait)

  if config.eval_every and evaluator is None:
    logging.warning("eval_every=%d but no evaluator was passed to train.run: no in-training "
                    "evaluation", config.eval_every)
  compile_ahead = config.precompile_next_stage
  if compile_ahead is None:
    compile_ahead = compilation.ahead_helps(programs.mesh.devices.flat[0].platform)
  note("training from step %d", start_step)
  last, preempted = {}, False
  try:
    clock = time.perf_counter()
    for step in range(start_step, config.total_steps):
      new_spec = programs.spec_at(step)
      if new_spec != spec:
        note("step %d: freezing %d blocks, target %s", step, new_spec.frozen_layers,
             new_spec.target)
        state = programs.resplit(state, new_spec, from_spec=spec)
        spec = new_spec
      batch = next(data_iter)
      video = pipeline.global_batch({"video": batch["video"]}, programs.video_sharding)["video"]
      fresh = spec not in programs._step_fns  # pylint: disable=protected-access
      step_fn = programs.step_fn(spec, state, video)
      if fresh:
        if compile_ahead:  # the next stage compiles while this one trains
          programs.compile_next_stage(step, spec, video)
        log.reset_clock(step)
        clock = time.perf_counter()  # compiling is not training time
      profiler.before_step(step + 1)
      state, metrics = step_fn(state, video)
      done = step + 1
      guard.observe(metrics, done)
      profiler.after_step(done, state)
      progress.clips_seen += config.batch_size
      if programs.trigger is not None:
        programs.check_convergence(done, metrics)
        progress.trigger = programs.trigger.state.to_json()
      if done % config.log_every == 0 or done == config.total_steps:
        metrics = jax.device_get(metrics)  # waits for the step: the time up to here was training
        now = time.perf_counter()
        progress.train_seconds += now - clock
        clock = now
        metrics.update(frozen_layers=spec.frozen_layers, target=spec.target,
                       clips_seen=progress.clips_seen, train_seconds=progress.train_seconds,
                       **pipeline.bad_input_metrics(),
                       **mixture.clip_counts(config.data, progress.clips_seen))
        if programs.trigger is not None:
          metrics["freeze_signal"] = programs.trigger.state.last_signal
        last = log.write(done, metrics, batch_size=config.batch_size, peak_flops=peak_flops,
                         flops_per_step=programs.flops_per_step(spec))
        stop_if_diverged(guard, ckpts)  # after logging: the bad step's row is in metrics.jsonl
      if evaluator and config.eval_every and (done % config.eval_every == 0
                                              or done == config.total_steps):
        progress.train_seconds += time.perf_counter() - clock
        eval_metrics = evaluator(programs, state, done)
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
    return RunResult(state, last, programs.compiles, programs.compile_seconds,
                     start_step=start_step, preempted=preempted, programs=programs.stats)
  note("done: %d steps, %d compiled stages, %.1fs compiling", config.total_steps,
       programs.compiles, programs.compile_seconds)
  collapsed = step_lib.looks_collapsed(last)
  if collapsed:
    logging.warning("final feature_spread %.3g < %.2g: the encoder's tokens are nearly all the "
                    "same vector (collapsed)", last["feature_spread"], step_lib.COLLAPSE_SPREAD)
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump({"final": last, "collapsed": collapsed, "compiles": programs.compiles,
                 "compile_seconds": programs.compile_seconds, "resumed_from": start_step,
                 "forked_from": config.fork_from or None,
                 "compile_cache_dir": jax.config.jax_compilation_cache_dir,
                 "precompile_next_stage": compile_ahead,
                 "programs": programs.stats,
                 "freeze_table": [dataclasses.asdict(s) for s in programs.table]}, f, indent=2)
  return RunResult(state, last, programs.compiles, programs.compile_seconds, start_step=start_step,
                   programs=programs.stats)
