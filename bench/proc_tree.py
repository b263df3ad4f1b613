"""Peak RSS and CPU time of a process TREE (a program plus its worker processes).

  python bench/proc_tree.py [--interval=0.2] -- COMMAND [ARGS...]

Runs COMMAND, samples the resident memory of it and all its descendants every --interval seconds
(psutil), and prints one JSON line: peak tree RSS (MiB), wall seconds, tree CPU seconds (children
that exited included), exit status. `/usr/bin/time -v` reports a single process's maximum and
misses grain's worker processes. `TreeSampler` does the same inside a benchmark process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import psutil


def tree(proc: psutil.Process) -> list[psutil.Process]:
  try:
    return [proc] + proc.children(recursive=True)
  except psutil.Error:
    return []


def tree_rss(proc: psutil.Process) -> int:
  total = 0
  for p in tree(proc):
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass  # exited between listing and reading
  return total


def tree_cpu(proc: psutil.Process) -> float:
  """CPU seconds of the live tree plus the children it has already reaped."""
  total = 0.0
  for p in tree(proc):
    try:
      t = p.cpu_times()
      total += t.user + t.system + (t.children_user + t.children_system if p is proc else 0.0)
    except psutil.Error:
      pass
  return total


class TreeSampler:
  """Samples a tree's RSS in a background thread: `with TreeSampler() as s: ...; s.peak`."""

  def __init__(self, pid: int | None = None, interval: float = 0.1):
    self.proc = psutil.Process(pid)
    self.interval, self.peak = interval, 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, tree_rss(self.proc))
      self._stop.wait(self.interval)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, tree_rss(self.proc))


def main(argv: list[str]) -> int:
  interval = 0.2
  if argv and argv[0].startswith("--interval="):
    interval = float(argv.pop(0).split("=", 1)[1])
  if argv and argv[0] == "--":
    argv = argv[1:]
  if not argv or argv[0] in ("-h", "--help"):
    print(__doc__)
    return 0 if argv else 2
  start = time.perf_counter()
  child = subprocess.Popen(argv)
  proc = psutil.Process(child.pid)
  peak, cpu = 0, 0.0
  while child.poll() is None:
    peak = max(peak, tree_rss(proc))
    cpu = max(cpu, tree_cpu(proc))
    time.sleep(interval)
  usage = psutil.Process().cpu_times()  # the reaped child's total (its reaped workers included)
  cpu = max(cpu, usage.children_user + usage.children_system)
  print(json.dumps({"peak_tree_rss_mib": round(peak / 2**20, 1),
                    "wall_s": round(time.perf_counter() - start, 1), "tree_cpu_s": round(cpu, 1),
                    "returncode": child.returncode}))
  return child.returncode


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
