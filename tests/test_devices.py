"""Data-parallel training (brainvq_utils.devices): 1 and 2 virtual CPU devices train the same
models, on TensorFlow (MirroredStrategy) and JAX (keras.distribution.DataParallel), and a
checkpoint written on 2 devices resumes on 1.

Each fit runs in its own process (tests/multidevice_fit.py): the CPU is split into devices
before the backend starts. Tolerance: 1e-5 relative on losses, 1e-5 absolute on codebooks and
reconstructions, 1e-4 absolute on the priors' weight sums (float32 sums taken in another order;
Adam's step amplifies that noise in weights near zero); losses agree to ~1e-7 in practice.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainvq_utils import devices
from brainvq_utils.config import RunConfig, load_params, stage_config
from brainvq_utils.errors import BrainVQError

SCRIPT = Path(__file__).with_name("multidevice_fit.py")
BACKENDS = ["tensorflow", "jax"]
RTOL, ATOL = 1e-5, 1e-5


def fit(backend, n_devices, run_dir, *extra):
    env = {**os.environ, "KERAS_BACKEND": backend}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--devices", str(n_devices), "--run-dir", str(run_dir), *extra],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):]), proc.stdout


def assert_same_history(a, b, model):
    for key, values in a[model]["history"].items():
        if "seconds" in key:
            continue
        np.testing.assert_allclose(b[model]["history"][key], values, rtol=RTOL, atol=1e-7, err_msg=f"{model} {key}")


@pytest.fixture(scope="module", params=BACKENDS)
def one_and_two(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"devices-{request.param}")
    return request.param, fit(request.param, 1, root / "one")[0], fit(request.param, 2, root / "two")


def test_one_and_two_devices_train_the_same_models(one_and_two):
    backend, one, (two, log) = one_and_two
    assert one["backend"] == two["backend"] == backend
    assert one["devices"] == ["cpu:0"] and two["devices"] == ["cpu:0", "cpu:1"]
    assert one["placed_on"] == [1, 1, 1] and two["placed_on"] == [2, 2, 2]   # weights mirrored on both
    assert "training VQ-VAE on 2 devices: cpu:0, cpu:1" in log
    for model in ("vqvae", "gated", "maskgit"):
        assert_same_history(one, two, model)
        assert len(one[model]["history"]["loss"]) == 2
    for prior in ("gated", "maskgit"):   # sums of |w| per tensor; Adam moves weights near 0 by ~1e-5 on float noise
        np.testing.assert_allclose(two[prior]["weights"], one[prior]["weights"], rtol=RTOL, atol=1e-4)


def test_the_codebook_state_reflects_the_global_batch_on_every_device(one_and_two):
    """EMA codebook, counts, usage and restarts: what one device computes from the whole batch."""
    _, one, (two, _) = one_and_two
    for key in ("codebook", "ema_count", "usage_counts", "reconstruction"):
        np.testing.assert_allclose(two["vqvae"][key], one["vqvae"][key], atol=ATOL, err_msg=key)
    assert two["vqvae"]["restarts"] == one["vqvae"]["restarts"] > 0
    assert sum(one["vqvae"]["usage_counts"]) == 32 * 4 * 4   # every vector of the last epoch, counted once


def test_a_checkpoint_written_on_two_devices_resumes_on_one(one_and_two, tmp_path):
    backend, one, _ = one_and_two
    two, _ = fit(backend, 2, tmp_path / "run", "--epochs", "1", "--models", "vqvae")
    (tmp_path / "run" / "vqvae" / "vqvae.keras").unlink()       # as if killed after epoch 1
    assert (tmp_path / "run" / "vqvae" / "checkpoints" / "vqvae_last.keras").exists()
    resumed, log = fit(backend, 1, tmp_path / "run", "--epochs", "2", "--models", "vqvae")
    assert "resuming from the checkpoint of epoch 1" in log and resumed["placed_on"] == [1]
    history = resumed["vqvae"]["history"]
    assert len(history["loss"]) == 2 and history["loss"][0] == two["vqvae"]["history"]["loss"][0]
    # and it ends where an uninterrupted run on one device ends
    np.testing.assert_allclose(history["loss"], one["vqvae"]["history"]["loss"], rtol=RTOL)
    np.testing.assert_allclose(resumed["vqvae"]["codebook"], one["vqvae"]["codebook"], atol=ATOL)
    shutil.rmtree(tmp_path)


def test_two_jax_processes_train_as_one_device(one_and_two, tmp_path):
    """Several machines: KERAS_DISTRIBUTION_* set, one process per machine (here two on this
    one, one CPU device each); the same code path joins them (keras.distribution.initialize)."""
    backend, one, _ = one_and_two
    if backend != "jax":
        pytest.skip("several processes are a JAX feature (keras.distribution.initialize)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
               "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(rank)}
        env.pop("XLA_FLAGS", None)
        procs.append(subprocess.Popen(
            [sys.executable, str(SCRIPT), "--devices", "auto", "--virtual", "1", "--models", "vqvae",
             "--run-dir", str(tmp_path / f"host{rank}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, out[-2000:] + err[-4000:]
        results.append(json.loads(lines[-1][len("RESULT "):]))
    for result in results:
        assert len(result["devices"]) == 2 and result["placed_on"] == [2]
        assert_same_history(one, result, "vqvae")
        np.testing.assert_allclose(result["vqvae"]["codebook"], one["vqvae"]["codebook"], atol=ATOL)


# ---------------------------------------------------------------- the parameter
@pytest.mark.parametrize("spec, expected", [("auto", "auto"), ("AUTO", "auto"), ("1", 1), (2, 2), ("4", 4)])
def test_devices_parameter_values(spec, expected):
    assert devices.parse(spec) == expected


@pytest.mark.parametrize("spec", ["0", "-1", "two", "1.5", "", True])
def test_bad_devices_values_get_a_one_line_error(spec):
    with pytest.raises(BrainVQError, match="devices=") as err:
        devices.parse(spec)
    assert "\n" not in str(err.value)


def test_devices_is_a_run_parameter_that_is_checked_up_front():
    assert stage_config(RunConfig, load_params("smoke", {"devices": 2})).devices == "2"
    assert devices.parse(load_params("smoke", {"devices": 2})["devices"]) == 2
    assert load_params("smoke", {"devices": "auto"})["devices"] == "auto"
    with pytest.raises(BrainVQError, match="devices=0 must be 1 or more"):
        load_params("smoke", {"devices": "0"})


def test_auto_is_one_cpu_device_here_and_more_devices_than_present_are_refused():
    assert devices.resolve("auto") == devices.resolve(1) == [devices.available()[0]]
    with pytest.raises(BrainVQError, match=r"devices=64 but this machine has \d+ .*BRAINVQ_VIRTUAL_CPUS=64"):
        devices.resolve(64)


def test_a_global_batch_must_split_evenly():
    devices.global_batch_check(8, 2)
    devices.global_batch_check(7, 1)
    with pytest.raises(BrainVQError, match="batch_size=6 does not split evenly across 4 devices.*e.g. 8"):
        devices.global_batch_check(6, 4)


def test_outside_a_multi_device_step_the_collectives_change_nothing():
    x = np.arange(6.0).reshape(3, 2)
    assert devices.all_sum(x) is x and devices.all_gather(x) is x
    assert devices.shard_start(3) == 0 and devices.replica_share(2.0) == 2.0
    with devices.scope(1) as chosen:
        assert chosen == devices.resolve(1)
