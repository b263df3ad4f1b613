"""data.convert's stages (convert_stages.py) as Apache Beam pipelines.

  python -m layerlock_jax.data.convert --input=... --output=... [--runner=DirectRunner]
      [Beam pipeline options, e.g. --direct_num_workers=8, or --runner=FlinkRunner
       --flink_master=HOST:8081 --environment_type=LOOPBACK]

Two pipelines per split, each a Create of work items, a Reshuffle (so the runner spreads them
over its workers) and a Map of a stage function: the inspection chunks still to do, then the
shards still to write. Between them the driver plans the shards from the saved results (the same
plan as the process pool's), so the records and shards are the same bytes whichever runner wrote
them, and a rerun skips what an interrupted one finished.

The DirectRunner defaults to every core (--direct_num_workers=0 with the multi_processing mode)
unless the options say otherwise. Cluster runners need the workers to see the input and output
folders at the same paths and `layerlock_jax` installed (pip install -e .[beam] on every worker,
or a container image).

Installing: `pip install -c .ci/constraints.txt -e .[beam]` (the test extra includes it; the
constraints pin protobuf, python-dateutil and pyarrow at versions Beam 2.78 accepts). Without Beam
the converter uses its process pool, with the same stages, resume and output.
"""
from __future__ import annotations

from typing import Sequence

from layerlock_jax.data import convert_stages

RUNNERS = ("DirectRunner", "FlinkRunner", "SparkRunner", "DataflowRunner", "PortableRunner",
           "PrismRunner")


def available() -> bool:
  """Whether Apache Beam is installed (the `beam` extra)."""
  try:
    import apache_beam  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


class BeamRunner:
  """Runs convert_stages work items on a Beam runner; `pipeline_args` are Beam's own flags."""

  def __init__(self, runner: str = "DirectRunner", pipeline_args: Sequence[str] = (),
               workers: int = 0):
    if not available():
      raise ValueError(f"--runner={runner} needs Apache Beam: pip install -e .[beam] (or run "
                       "with --runner=processes)")
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
    args = list(pipeline_args)
    given = {a.split("=")[0].lstrip("-") for a in args}
    if runner == "DirectRunner":
      if "direct_num_workers" not in given:
        args.append(f"--direct_num_workers={int(workers)}")   # 0: one per core
      if "direct_running_mode" not in given:
        args.append("--direct_running_mode=multi_processing")
    self.runner = runner
    self.options = PipelineOptions(args, runner=runner)

  def _run(self, name: str, items: list, fn) -> None:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    with beam.Pipeline(options=self.options) as p:
      _ = (p | f"{name}/items" >> beam.Create(items)
           | f"{name}/spread" >> beam.Reshuffle()
           | f"{name}/run" >> beam.Map(fn))

  def inspect(self, jobs: list[tuple]) -> None:
    self._run("inspect", jobs, convert_stages.inspect_chunk)

  def write(self, jobs: list[tuple]) -> None:
    self._run("write", jobs, convert_stages.write_shard)
