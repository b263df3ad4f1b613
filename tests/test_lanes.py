"""experiments/lanes.py: jobs with dependencies on worker processes pinned to one core each.

The job functions live at module level: a spawned worker imports this module to run them."""
import glob
import json
import os
import time

import pytest

from experiments import lanes

pytestmark = pytest.mark.skipif(not lanes.usable_cores(), reason="needs Linux's affinity API")


def _marker(path: str, name: str, event: str) -> str:
  return f"{path}.{name}.{event}"


def _record(path: str, name: str, seconds: float, fail: bool = False,
            wait_for: tuple = ()) -> dict:
  """Marks its start (a file), waits until every job in `wait_for` has marked its start (up to
  60 s, then raises), sleeps `seconds`, marks its end, and appends {name, start, end, pid, cores,
  ended_before_start: the jobs whose end marker existed when it started} to the file at `path`."""
  start = time.time()
  ended = sorted(os.path.basename(m).split(".")[-2] for m in glob.glob(_marker(path, "*", "end")))
  open(_marker(path, name, "start"), "w").close()
  deadline = time.monotonic() + 60
  for other in wait_for:
    while not os.path.exists(_marker(path, other, "start")):
      if time.monotonic() > deadline:
        raise RuntimeError(f"job {name}: {other} never started while {name} ran")
      time.sleep(0.01)
  time.sleep(seconds)
  if fail:
    raise RuntimeError(f"job {name} exploded")
  row = {"name": name, "start": start, "end": time.time(), "pid": os.getpid(),
         "cores": sorted(os.sched_getaffinity(0)), "ended_before_start": ended}
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")
  open(_marker(path, name, "end"), "w").close()
  return row


def _rows(path) -> dict[str, dict]:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {r["name"]: r for r in map(json.loads, f)}


def test_two_lanes_pin_each_worker_to_one_core_and_respect_dependencies(tmp_path):
  """Ordered by marker files, not by sleeps: `source` only ends once `independent` and `late` have
  started, so the two lanes ran `source` beside `independent`, then `late` on the lane that freed
  up while `source` still ran (and `fork`, which waits on `source`, could not start)."""
  path = str(tmp_path / "log.jsonl")
  jobs = [lanes.Job("source", _record, (path, "source", 0.0, False, ("independent", "late"))),
          lanes.Job("independent", _record, (path, "independent", 0.0)),
          lanes.Job("fork", _record, (path, "fork", 0.0), deps=("source",)),
          lanes.Job("late", _record, (path, "late", 0.0))]
  results = lanes.run(jobs, 2)
  rows = _rows(path)
  assert set(results) == set(rows) == {"source", "independent", "fork", "late"}
  assert results["fork"]["end"] == rows["fork"]["end"]  # each result comes back to its name
  # The fork started after its source ended, although a lane was free before that.
  assert "source" in rows["fork"]["ended_before_start"]
  # ...and that free lane took the next job whose dependencies were met instead of idling (else
  # `source` would have waited for `late` in vain and raised).
  assert "source" not in rows["late"]["ended_before_start"]
  assert "independent" in rows["late"]["ended_before_start"]
  usable = set(lanes.usable_cores())
  for row in rows.values():
    assert len(row["cores"]) == 1 and set(row["cores"]) <= usable  # one core per worker
  if len(usable) >= 2:  # the two jobs that ran side by side had a core each
    assert rows["source"]["cores"] != rows["independent"]["cores"]
  assert os.getpid() not in {r["pid"] for r in rows.values()}  # worker processes, not this one


def test_a_failed_job_raises_and_no_later_job_starts(tmp_path):
  path = str(tmp_path / "log.jsonl")
  jobs = [lanes.Job("bad", _record, (path, "bad", 0.0, True)),
          lanes.Job("after", _record, (path, "after", 0.0), deps=("bad",)),
          lanes.Job("queued", _record, (path, "queued", 0.0))]
  with pytest.raises(RuntimeError, match="job bad exploded"):
    lanes.run(jobs, 1)
  assert _rows(path) == {}  # one lane: nothing else had started, and nothing started after


def test_bad_job_lists_are_refused_before_anything_runs(tmp_path):
  path = str(tmp_path / "log.jsonl")
  ok = lanes.Job("a", _record, (path, "a", 0.0))
  with pytest.raises(ValueError, match="unknown jobs"):
    lanes.run([ok, lanes.Job("b", _record, (path, "b", 0.0), deps=("nope",))], 2)
  with pytest.raises(ValueError, match="repeat"):
    lanes.run([ok, ok], 2)
  with pytest.raises(ValueError, match="wait on each other"):
    lanes.run([ok, lanes.Job("x", _record, (path, "x", 0.0), deps=("y",)),
               lanes.Job("y", _record, (path, "y", 0.0), deps=("x",))], 1)
  assert set(_rows(path)) <= {"a"}  # the cycle is found once the runnable jobs are done
  with pytest.raises(ValueError, match="not earlier in the list"):
    lanes.run_inline([lanes.Job("x", _record, (path, "x", 0.0), deps=("a",)), ok])


def test_inline_runs_in_order_in_this_process(tmp_path):
  path = str(tmp_path / "log.jsonl")
  jobs = [lanes.Job("a", _record, (path, "a", 0.0)),
          lanes.Job("b", _record, (path, "b", 0.0), deps=("a",))]
  results = lanes.run(jobs, 0)
  assert [r["pid"] for r in results.values()] == [os.getpid()] * 2
  assert results["a"]["end"] <= results["b"]["start"]
