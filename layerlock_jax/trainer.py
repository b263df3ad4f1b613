"""The run's central object, `Trainer`: model, freeze table, schedules, optimizer, mesh, shardings,
the train state's constructors in the run's layout, and the per-stage compiled programs.

train.run drives it (the loop); aot, evaluate, bench and the tests build one to reach the very
programs training runs. Nothing here loops over steps or writes files.
"""
import logging
import time

import flax.linen as nn
import jax
import numpy as np

from layerlock_jax.checkpoint import manager as checkpoint
from layerlock_jax.checkpoint import params as checkpoint_params
from layerlock_jax import compilation
from layerlock_jax import distributed
from layerlock_jax import flops
from layerlock_jax.methods import layerlock
from layerlock_jax.methods import vjepa
from layerlock_jax.models import video_mae
from layerlock_jax import optimizer
from layerlock_jax import plan
from layerlock_jax import sharding
from layerlock_jax import state as state_lib
from layerlock_jax import train_step as step_lib


def note(msg: str, *args):
  """Phase banner: the log shows where a run is (and where it hung)."""
  logging.info("=== " + msg, *args)


class Trainer:
  """The run's central object: what is built from the config once, and the compiled programs of
  each freeze stage.

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
    self.trigger = None
    if plan.convergence_trigger(config):
      self.trigger = layerlock.ConvergenceTrigger(
          config, plan.frozen_cap(config, self.model.encoder_depth))
    self._build_schedule()
    self.latent_weight_fn = layerlock.naive_latent_weight_fn(config)
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
    self.table = plan.freeze_table(self.config, self.model.encoder_depth, decided=decided)
    self.learning_rate_fn = optimizer.learning_rate_fn(self.config, self.table)
    self.tx = optimizer.make_optimizer(self.config.optimizer, self.learning_rate_fn)

  def restore_trigger(self, saved: dict):
    """Continue the convergence trigger from a checkpoint's `Progress.trigger`."""
    if self.trigger is not None and saved:
      self.trigger.state = layerlock.TriggerState.from_json(saved)
      self._build_schedule()

  def check_convergence(self, done: int, metrics: dict) -> bool:
    """After step `done`: let the trigger look at the trainable blocks' norms (a host sync, but
    only every `check_every` steps). True when it decided a freeze starting at step `done`."""
    norms = metrics.pop(layerlock.LAYER_NORMS, None)
    if self.trigger is None or norms is None or not self.trigger.due(done):
      return False
    event = self.trigger.observe(done, [float(x) for x in jax.device_get(norms)])
    if event is None:
      return False
    self._build_schedule()
    note("step %d: the next block's norm has plateaued; freeze table now:\n%s", done,
         plan.format_table(self.table, self.config.total_steps))
    return True

  # --- stages ----------------------------------------------------------------------------------
  def spec_at(self, step: int) -> plan.StageSpec:
    stage = self.table[plan.stage_index_at(self.table, step)]
    return plan.stage_spec(self.config, stage.frozen_layers, stage.target)

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

  def restore(self, path: str, data_iter=None) -> checkpoint.Restored:
    """The train state of a checkpoint (workdir, checkpoints dir or step dir) in this run's
    layout, at its saved stage (checkpoint.restore into `abstract_state`)."""
    return checkpoint.restore(path, self.config, self.abstract_state, data_iter)

  # --- init and stage switches, compiled with explicit output shardings -----------------------
  def init_state(self, spec, init_from: str = "") -> state_lib.TrainState:
    """Fresh parameters created directly in their sharded layout (never whole on one device).
    With `init_from` (a checkpoint path), the parameters it holds (checkpoint.params.init_from)."""
    source = None
    if init_from:
      source = checkpoint_params.init_from(init_from, self.config, self.abstract_state,
                                           self.abstract_params, self.param_shardings)

    def build(key, seed, *arrays):
      if source is None:
        full = nn.unbox(self.model.init(key))
      else:
        full = source.fill(nn.unbox(self.model.init(key)) if source.needs_fresh else None, *arrays)
      return self.new_state(full, spec, seed)
    # Not under activation_sharding: init needs only the output shardings, and flax's
    # DenseGeneral init reshapes boxed kernels in a way that logical constraints reject.
    # The seed goes in as an argument, not a constant: runs that differ only in their seed share
    # one init program (and its persistent-cache entry), as they share the step.
    return jax.jit(build, out_shardings=self.state_shardings(spec))(
        jax.random.key(self.config.seed), np.asarray(self.config.seed, np.uint32),
        *(source.arrays if source else ()))

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

  def compile_next_stage(self, step: int, spec, video) -> plan.StageSpec | None:
    """Start compiling, in the background, the resplit into and the step of the stage after the
    one active at `step` (if it starts before total_steps). Returns its spec, or None."""
    index = plan.stage_index_at(self.table, step) + 1
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
    return flops.step_flops(self.config, spec)["model_flops"]

  def is_compiled(self, spec) -> bool:
    """Whether the step of stage `spec` has been compiled (or taken from an ahead compile)."""
    return spec in self._step_fns

  @property
  def compiles(self) -> int:
    return len(self._step_fns)


def memory_rows(compiled) -> dict:
  """The per-device buffer sizes XLA assigned to a compiled program, as byte columns:
  temp_bytes (activations and scratch live during the program), argument_bytes, output_bytes,
  alias_bytes (outputs written into donated arguments). None where the backend has no memory
  analysis."""
  mem = compiled.memory_analysis()
  return {f"{key}_bytes": int(getattr(mem, f"{key}_size_in_bytes")) if mem else None
          for key in ("temp", "argument", "output", "alias")}


def program_stats(compiled, spec, compile_seconds: float, model_flops: float) -> dict:
  """A compiled stage program's costs: analytic model FLOPs per step and memory_rows."""
  return {"frozen_layers": spec.frozen_layers, "target": spec.target,
          "compile_seconds": compile_seconds, "model_flops": model_flops, **memory_rows(compiled)}
