"""``brainvq bench gpu --smoke``: the full-profile benchmark's stages run end to end on the CPU (the GPU
figures themselves need a GPU: the README says where they stand)."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_gpu_smoke_runs_every_stage_and_prints_its_figures(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BRAINVQ_HEADLESS": "1"}
    done = subprocess.run([sys.executable, "-m", "brainvq_utils.cli", "bench", "gpu", "--smoke", "--n", "32",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    stages = {row["stage"]: row for row in result["stages"]}
    assert result["profile"] == "smoke" and len(stages) == 8
    assert stages["one epoch through the input pipeline"]["images_per_s"] > 0
    assert 0 < stages["VQ-VAE test scores"]["test_ssim_mean"] <= 1
    assert 0 <= stages["scores"]["outline_broken"] <= 1 and 0 <= stages["scores"]["auc_reconstructions_vs_samples"] <= 1
    assert all(row["seconds"] >= 0 and row["peak_gib"] > 0 for row in stages.values())
    assert "total" in done.stdout and "stage" in done.stdout
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([sys.executable, "-m", "brainvq_utils.cli", "bench", "gpu", "--vqvae-budget", "0"],
                       capture_output=True, text=True, env=env, timeout=300, check=True)
