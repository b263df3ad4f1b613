"""A jax.profiler trace of a few training steps: `--config.profile_steps=(a,b)`.

Steps are counted as in metrics.jsonl (step s is the s-th optimizer step): the trace starts just
before step a runs and stops once step b's results are ready, so it holds b - a + 1 whole steps.
Pick a past the first step of a stage, or the trace is mostly compilation.

The trace goes to `<workdir>/tensorboard/plugins/profile/<time>/<host>.xplane.pb`, the layout of
TensorBoard's profile plugin, next to the scalars MetricsLog writes: open it with
`pip install tensorboard tensorboard-plugin-profile; tensorboard --logdir <workdir>/tensorboard`
(PROFILE tab), or load the .xplane.pb in Perfetto / XProf. By default only process 0 traces; set
`profile_all_processes=True` for one trace per host.
"""
from __future__ import annotations

import logging
import os

import jax


class Profiler:
  """Starts and stops one trace around steps a..b (a no-op when profile_steps is empty)."""

  def __init__(self, config, workdir: str):
    steps = tuple(config.get("profile_steps", ()) or ())
    self.first, self.last = (int(steps[0]), int(steps[1])) if steps else (0, -1)
    self.enabled = bool(steps) and (jax.process_index() == 0
                                    or bool(config.get("profile_all_processes", False)))
    self.log_dir = os.path.join(workdir, "tensorboard")
    self.active = False

  def before_step(self, done: int):
    """Called before the step that will end with `done` steps taken."""
    if self.enabled and not self.active and self.first <= done <= self.last:
      logging.info("profiling steps %d..%d into %s", done, self.last, self.log_dir)
      jax.profiler.start_trace(self.log_dir)
      self.active = True

  def after_step(self, done: int, outputs):
    """Called after dispatching the step `done`; `outputs` are waited for before stopping."""
    if self.active and done >= self.last:
      self.stop(outputs)

  def stop(self, outputs=None):
    if self.active:
      if outputs is not None:
        jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self.active = False
      logging.info("profile written under %s", os.path.join(self.log_dir, "plugins", "profile"))
