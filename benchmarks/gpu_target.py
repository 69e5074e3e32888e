"""Compiling for a GPU on a machine without one: XLA's GPU compiler, no device.

JAX can compile for a GPU described in text (a `GpuTargetConfig`) instead of
a GPU it can see: `jax.experimental.topologies.get_topology_desc(platform=
"cuda", target_config=...)` gives a device to lay arrays out on, and
`jax.jit(f).lower(<arrays on it>).compile()` runs the whole GPU pipeline --
fusion, buffer assignment, Triton for Pallas kernels, ptxas -- without
allocating or running anything. What that gives is exact for everything the
compiler decides (which kernels exist, `memory_analysis()`), and nothing at
all about time. Autotuning needs a device, so matmul tilings are the
compiler's defaults (this changes no buffer sizes).

Needs JAX's CUDA plugin (`pip install "jax[cuda12]"`); no GPU, no driver.
The benchmarks call `use_target(name)` before touching any backend.

On the numbers (checked): for the fused-linear step at ``B*T = 8192, H =
4096, V = 128256`` in bf16, the compiled sizes from this target and from a
real H200 (jax 0.11.2) agree to the printed digit (6.40 and 8.99 GiB before
the change that this was first used for).
"""
from __future__ import annotations

import os

# NVIDIA H200 (SXM, 141 GB): 132 SMs of compute capability 9.0, the H100's
# per-SM limits, 4.8 TB/s of HBM3e; CUDA 12.8 and cuDNN 9.8 as the runtime.
H200 = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 4800000000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 150754820096
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {
    major: 9
  }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info {
  major: 9
  minor: 8
}
runtime_version {
  major: 12
  minor: 8
  patch: 0
}
device_description_str: "NVIDIA H200"
"""

TARGETS = {"h200": H200}

_sharding = None


def use_target(name: str):
  """Prepares this process to compile for GPU `name` with no device; call before any backend use.

  Returns the sharding that places an array on the described GPU: give it to
  `jax.ShapeDtypeStruct(..., sharding=...)` for every argument to `lower`.
  """
  global _sharding
  if name not in TARGETS:
    raise ValueError(f"`target` must be one of {sorted(TARGETS)}, got {name!r}.")
  # The CUDA plugin checks the installed CUDA libraries against a driver at
  # start-up; there is none here, and compiling needs none.
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_platforms", "cpu")
  try:
    topology = topologies.get_topology_desc(platform="cuda", target_config=TARGETS[name],
                                            topology="1x1x1")
  except (NotImplementedError, RuntimeError) as error:
    raise SystemExit(f"--target={name} needs JAX's CUDA plugin (pip install "
                     f"'jax[cuda12]'); it could not describe the GPU: {error}") from error
  mesh = topologies.make_mesh(topology, (1,), ("x",))
  _sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # The one-pass Pallas kernels are chosen when a CUDA device is present; a
  # described GPU is not one, so ask for them as a real GPU would get them.
  from divlab.divergences import categorical  # pylint: disable=import-outside-toplevel
  from divlab.divergences import fused  # pylint: disable=import-outside-toplevel
  categorical._FORWARD = "pallas"  # pylint: disable=protected-access
  # Likewise the fused-linear chunk plan: this process's backend is the CPU.
  fused.PLAN_PLATFORM = "gpu"
  return _sharding
