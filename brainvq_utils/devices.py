"""Training on one device or several, on the engines Keras already has (data parallel), and the
hardware's bfloat16 (``resolve_precision``: the precision a prior trains in where it is fastest).

One parameter, ``devices`` (``-p devices=auto|1|N``), picks how many devices a fit uses:
``auto`` takes every accelerator present (GPUs, TPUs) and one CPU device on a CPU-only
machine. With more than one, each global batch is split across the devices, every device
holds a full copy of the weights, and the gradients are summed across them:

- TensorFlow: ``tf.distribute.MirroredStrategy`` over the chosen devices;
- JAX: ``keras.distribution.DataParallel`` (one program over all devices, SPMD). Several
  machines: set ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
  ``KERAS_DISTRIBUTION_PROCESS_ID`` on each; ``initialize_multi_host`` (from ``pipeline.start``,
  and before any device is listed) calls ``keras.distribution.initialize``
  (``jax.distributed.initialize``) first (README).

State that a layer changes inside ``call`` (the EMA codebook, its usage counts, dead-code
restarts) must see the whole global batch and stay the same on every device. Under JAX the
step is one program over the global batch, so it does. Under MirroredStrategy each replica
runs ``call`` on its own shard, and a variable with the default aggregation is updated by
each replica alone, so the copies drift apart silently. Layers therefore combine their
statistics with ``all_sum`` / ``all_gather`` / ``shard_start`` below (no-ops outside a
multi-replica step) before assigning them, and create such variables with
``aggregation="only_first_replica"`` so that only replica 0's value is ever written.

``virtual_cpus(n)`` (or ``BRAINVQ_VIRTUAL_CPUS=n`` before the package is imported) splits the
CPU into ``n`` devices, which is how the tests and ``brainvq bench train --devices 1 2`` run
the multi-device path on a machine without accelerators: correctness and overhead, not speed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import BrainVQError

VIRTUAL_CPUS_ENV = "BRAINVQ_VIRTUAL_CPUS"
MULTI_HOST_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                  "KERAS_DISTRIBUTION_PROCESS_ID")


def _backend() -> str:
    import keras
    return keras.backend.backend()


def parse(spec) -> str | int:
    """``"auto"`` or a positive device count, from a parameter value (str or int)."""
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return "auto"
    try:
        count = int(spec)
        if isinstance(spec, bool) or str(count) != str(spec).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise BrainVQError(f"devices={spec!r} is not 'auto' or a whole number of devices, e.g. 1 or 2") from None
    if count < 1:
        raise BrainVQError(f"devices={count} must be 1 or more (or 'auto': every accelerator present)")
    return count


def virtual_cpus(n: int) -> None:
    """Split the CPU into ``n`` logical devices; call before the backend has started (before any
    model or tensor exists), e.g. first thing in a script. Under JAX this sets XLA_FLAGS, so it
    must even come before ``import jax``."""
    n = parse(n)
    if n == "auto":
        raise BrainVQError("virtual_cpus needs a number of devices, e.g. 2")
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "jax":
        flag = f"--xla_force_host_platform_device_count={n}"
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
        os.environ["XLA_FLAGS"] = " ".join([*flags, flag])
        return
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        raise BrainVQError(f"cannot split the CPU into {n} devices: TensorFlow has started already; set "
                           f"{VIRTUAL_CPUS_ENV}={n} before starting Python (or the notebook's kernel)") from None


def _multi_host() -> bool:
    return any(os.environ.get(name) for name in MULTI_HOST_ENV)


def initialize_multi_host() -> bool:
    """Under JAX with the ``KERAS_DISTRIBUTION_*`` variables set, join the other processes
    (``keras.distribution.initialize``), once; True if this is a multi-process run."""
    if not _multi_host():
        return False
    if _backend() != "jax":
        raise BrainVQError("several machines are supported under JAX (KERAS_BACKEND=jax); under TensorFlow "
                           f"unset {', '.join(MULTI_HOST_ENV)}")
    import jax
    import keras
    if not getattr(initialize_multi_host, "done", False):
        if not jax.distributed.is_initialized():
            keras.distribution.initialize()
        initialize_multi_host.done = True
    return True


def available() -> list[str]:
    """The devices a fit may use: every accelerator of the backend, or its CPU devices where there
    is none (every process's devices in a multi-host JAX run)."""
    import keras
    initialize_multi_host()
    return list(keras.distribution.list_devices())


def resolve(spec) -> list[str]:
    """The devices that ``devices=spec`` means on this machine (``auto``: every accelerator, or
    one CPU device; in a multi-process JAX run, every process's). One-line error when more are
    asked for than there are."""
    spec = parse(spec)
    found = available()
    accelerators = [d for d in found if not d.lower().startswith("cpu")]
    if spec == "auto":   # one CPU device, except in a multi-process run: every process's
        return accelerators or (found if _multi_host() else found[:1])
    if spec > len(found):
        raise BrainVQError(
            f"devices={spec} but this machine has {len(found)} ({', '.join(found)}); use devices=auto or at "
            f"most {len(found)} (on a CPU, {VIRTUAL_CPUS_ENV}={spec} splits it into {spec} devices for a test)")
    return found[:spec]


def _tf_name(device: str) -> str:
    kind, _, index = device.partition(":")
    return f"/{kind.upper()}:{index}"


@contextlib.contextmanager
def scope(spec="auto"):
    """Within it, models built, compiled, loaded and fitted use the devices ``spec`` names (see
    the module's docstring); yields that list. One device: no distribution at all."""
    chosen = resolve(spec)
    backend = _backend()
    if len(chosen) == 1 and not _multi_host():
        yield chosen
        return
    if backend == "tensorflow":
        import tensorflow as tf
        # Explicit all-reduce: TensorFlow 2.21's default (collective ops) aborts with "Shape mismatch in
        # the collective instance" on the sparse gradients of the priors' embeddings (tensorflow#34066).
        # NCCL sums dense gradients on GPUs and falls back to one device for the sparse ones.
        gpus = all(d.lower().startswith("gpu") for d in chosen)
        reduce = tf.distribute.NcclAllReduce(num_packs=1) if gpus else tf.distribute.ReductionToOneDevice()
        strategy = tf.distribute.MirroredStrategy([_tf_name(d) for d in chosen], cross_device_ops=reduce)
        with strategy.scope():
            yield chosen
    elif backend == "jax":
        import keras
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=chosen))
        try:
            yield chosen
        finally:
            keras.distribution.set_distribution(previous)
    else:
        raise BrainVQError(f"training on {len(chosen)} devices needs the tensorflow or jax backend, not {backend!r}; "
                           f"use devices=1")


def global_batch_check(batch_size: int, n_devices: int, name: str = "batch_size") -> None:
    """A global batch must split evenly across the devices."""
    if n_devices > 1 and batch_size % n_devices:
        raise BrainVQError(f"{name}={batch_size} does not split evenly across {n_devices} devices; use a multiple "
                           f"of {n_devices}, e.g. {batch_size + n_devices - batch_size % n_devices}")


# ---------------------------------------------------------------- inside a training step
def _replica_context():
    """TensorFlow's replica context while a multi-replica step runs; None anywhere else (one
    device, cross-replica code, JAX, whose step already sees the global batch)."""
    if _backend() != "tensorflow":
        return None
    import tensorflow as tf
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def all_sum(x):
    """``x`` summed over the replicas of the step (the whole global batch's total)."""
    context = _replica_context()
    return x if context is None else context.all_reduce("sum", x)


def all_gather(x):
    """``x`` of every replica concatenated along axis 0, in replica order (the order of the
    global batch)."""
    context = _replica_context()
    return x if context is None else context.all_gather(x, axis=0)


def shard_start(rows):
    """Where this replica's ``rows`` rows start in ``all_gather``'s concatenation (0 alone)."""
    context = _replica_context()
    if context is None:
        return 0
    from keras import ops
    sizes = context.all_gather(ops.reshape(ops.cast(rows, "int32"), (1,)), axis=0)
    before = ops.arange(ops.shape(sizes)[0]) < context.replica_id_in_sync_group
    return ops.sum(ops.where(before, sizes, 0))


def replica_share(loss):
    """A loss term added outside the compiled loss, scaled as Keras scales its own under
    MirroredStrategy (divided by the number of replicas, whose gradients are then summed)."""
    if _backend() != "tensorflow":
        return loss
    import tensorflow as tf
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss / replicas


# ----------------------------------------------------------------------------- bfloat16 in hardware
def cpu_has_native_bfloat16(cpuinfo="/proc/cpuinfo") -> bool:
    """Whether the CPU does bfloat16 arithmetic in hardware (x86 AVX512_BF16 or AMX; read
    from /proc/cpuinfo, so False where there is none, e.g. on macOS)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def gpu_has_bfloat16(device_details=None) -> bool | None:
    """Whether the first GPU computes in bfloat16 natively (``colab.has_bfloat16``: compute
    capability 8.0 or more); None where there is no GPU. Asks TensorFlow, or JAX under the JAX
    backend. ``device_details``: a dict with ``compute_capability`` instead (tests)."""
    import keras

    from .colab import has_bfloat16   # stdlib only: the Colab setup cell loads that module by its path
    if device_details is None:
        if keras.backend.backend() == "jax":
            import jax
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            if not gpus:
                return None
            device_details = {"compute_capability": getattr(gpus[0], "compute_capability", None)}
        else:
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return None
            device_details = tf.config.experimental.get_device_details(gpus[0])
    capability = device_details.get("compute_capability")
    try:
        return bool(capability) and has_bfloat16(capability)
    except (TypeError, ValueError):
        return False


def resolve_precision(precision: str, cpuinfo="/proc/cpuinfo", gpu_bfloat16=None) -> str:
    """The dtype policy a prior trains under: ``"auto"`` picks ``"mixed_bfloat16"`` on a GPU with
    native bfloat16 (``gpu_has_bfloat16``), and on a CPU-only machine whose CPU has it, where more
    epochs fit into a time budget (``brainvq bench prior --precisions``; README); ``"float32"``
    anywhere else. ``gpu_bfloat16``: True/False/None (no GPU) instead of asking the machine."""
    import keras

    if precision != "auto":
        return precision
    on_accelerator = any(not str(d).lower().startswith("cpu") for d in keras.distribution.list_devices())
    if on_accelerator:
        if gpu_bfloat16 is None:
            gpu_bfloat16 = gpu_has_bfloat16()
        return "mixed_bfloat16" if gpu_bfloat16 else "float32"
    return "mixed_bfloat16" if cpu_has_native_bfloat16(cpuinfo) else "float32"
