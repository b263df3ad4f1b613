"""The papers' claims at small scale: a harness built on layerlock_jax, outside the library.

  python -m experiments.reproduce --out=/tmp/reproduce        (from the repository root)

reproduce.py trains the runs of configs/experiments/ and writes the report; claims.py turns
finished runs into numbers and verdicts; report.py writes report.md and its figures;
convergence.py is the convergence-order grid (freeze blocks <= L at step T).
"""
