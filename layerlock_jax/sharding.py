"""Mesh, logical-axis rules and the shardings of parameters, optimizer state and batches.

The model names every parameter and activation axis logically ("embed", "mlp", "heads", "batch",
...); the config picks a rules preset (config_defaults.SHARDING_PRESETS) that maps logical names to
the mesh axes ("data", "fsdp", "tensor"), slowest interconnect first. Changing the parallelism
of a run is a config change, never a model change.
"""
import contextlib

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import validation as config_validation
from layerlock_jax import plan

MESH_AXES = plan.options.MESH_AXES


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  """The (data, fsdp, tensor) mesh over `devices` (default: all), sizes from the config."""
  devices = list(jax.devices() if devices is None else devices)
  shape = config_validation.resolve_mesh_shape(mesh_cfg, len(devices))
  slices = len({getattr(d, "slice_index", 0) or 0 for d in devices})
  if slices > 1:
    # Multi-slice: slices talk over the data-centre network (DCN), so only the data axis (the
    # slowest-interconnect one) spans them; fsdp and tensor stay inside a slice's ICI.
    if shape[0] % slices:
      raise plan.ConfigError(
          "config.mesh.data", f"data={shape[0]} must be a multiple of the {slices} slices (the "
          "data axis spans them); set --config.mesh.data=-1 or a multiple")
    grid = mesh_utils.create_hybrid_device_mesh(
        (shape[0] // slices, shape[1], shape[2]), (slices, 1, 1), devices)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
  try:  # physical-topology-aware layout on TPU/GPU
    grid = mesh_utils.create_device_mesh(shape, devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)
  # Auto axes: sharding constraints by logical names need them (jax.make_mesh defaults to Explicit).
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def axis_rules(mesh_cfg) -> tuple:
  """Overrides first (first match wins), then the named preset."""
  overrides = tuple((str(name), _axes(target)) for name, target in mesh_cfg.rules)
  return overrides + config_defaults.SHARDING_PRESETS[mesh_cfg.preset]


def _axes(target):
  if target is None or isinstance(target, str):
    return target
  return tuple(target)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules):
  """Context under which the model's logical activation constraints resolve on `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def _fit_spec(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
  """Drop mesh axes from dimensions they don't divide (tiny configs on many devices)."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    fitted.append(axes if names and dim % size == 0 else None)
  return PartitionSpec(*fitted)


def param_shardings(boxed_abstract, mesh: Mesh, rules):
  """NamedShardings for an abstract (eval_shape'd) boxed parameter tree."""
  specs = nn.get_partition_spec(boxed_abstract)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  shapes = nn.unbox(boxed_abstract)
  return jax.tree.map(lambda s, x: NamedSharding(mesh, _fit_spec(s, x.shape, mesh)),
                      mesh_specs, shapes, is_leaf=lambda s: isinstance(s, PartitionSpec))


def opt_state_shardings(tx, abstract_params, params_sharding, mesh: Mesh):
  """Optimizer-state shardings: moment trees follow their parameters, counters are replicated."""
  abstract_state = jax.eval_shape(tx.init, abstract_params)
  return optax.tree_utils.tree_map_params(
      tx, lambda _, sharding: sharding, abstract_state, params_sharding,
      transform_non_params=lambda _: replicated(mesh),
      is_leaf=lambda x: isinstance(x, NamedSharding))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, rules, ndim: int) -> NamedSharding:
  """Leading axis split by the "batch" rule, other axes replicated."""
  spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)
