"""python -m layerlock_jax.weights import|export ... (see layerlock_jax/weights/__init__.py)."""
import argparse
import logging
import os
import sys

from layerlock_jax import plan
from layerlock_jax.weights import WeightsError

READERS = ("hf_videomae", "4ds_npz")
WRITERS = ("hf_videomae",)


def import_weights(source: str, path: str, workdir: str, seed: int = 0) -> str:
  """Read `path` (a READERS format) and write it into the new `workdir`; returns the step dir."""
  # pylint: disable=g-import-not-at-top
  from layerlock_jax.weights import fourds, hf_videomae
  from layerlock_jax.weights import workdir as workdir_lib
  reader = {"hf_videomae": hf_videomae.read, "4ds_npz": fourds.read}[source]
  imported = reader(path)  # validates everything before anything is written
  return workdir_lib.save_imported(imported, workdir, seed)


def export_weights(workdir: str, target: str, path: str, step: int | None = None) -> None:
  """Write the encoder of `workdir`'s checkpoint as a `target` (WRITERS) checkpoint at `path`."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from layerlock_jax.weights import hf_videomae  # pylint: disable=g-import-not-at-top
  from layerlock_jax.weights import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  del target  # one writer so far
  config = workdir_lib.load_config(workdir)
  m, d = config.model, config.data
  model = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in m.items()
           if k != "decoder"}
  model["depth"] = plan.encoder_depth(config)  # a query decoder's blocks stay behind
  data = {"num_frames": d.num_frames, "image_size": d.image_size}
  if m.posemb != "sincos_1d":
    hf_videomae.write(model, data, {}, path)  # raises the explanation before any array is read
  if os.path.exists(os.path.join(path, "model.safetensors")):
    raise WeightsError(f"--path={path} already holds a model.safetensors; refusing to overwrite")
  _, _, params = workdir_lib.load_params(workdir, step)
  encoder = {k: params[k] for k in ("embed", "encoder", "encoder_norm") if k in params}
  hf_videomae.write(model, data, jax.tree.map(np.asarray, encoder), path)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m layerlock_jax.weights", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="a released checkpoint -> a new workdir")
  imp.add_argument("--from", dest="source", required=True, choices=READERS)
  imp.add_argument("--path", required=True, help="HF save_pretrained dir, or the 4DS .npz file")
  imp.add_argument("--workdir", required=True, help="new workdir to write (must not hold a run)")
  imp.add_argument("--seed", type=int, default=0, help="seed of the (fresh) decoder and heads")
  exp = sub.add_parser("export", help="a workdir's encoder -> a released format")
  exp.add_argument("--workdir", required=True)
  exp.add_argument("--to", dest="target", required=True, choices=WRITERS)
  exp.add_argument("--path", required=True, help="output directory")
  exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  try:
    if args.command == "import":
      out = import_weights(args.source, args.path, args.workdir, args.seed)
      print(f"imported {args.source} {args.path} -> {out}")
    else:
      export_weights(args.workdir, args.target, args.path, args.step)
      print(f"exported {args.workdir} -> {args.path} ({args.target})")
  except WeightsError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
