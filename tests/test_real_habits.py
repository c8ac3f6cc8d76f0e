"""Real habits: 8-bit arrays handed to the scores, papermill's typed parameters and parameters the
notebook does not declare, a relative data folder and a kernel that moves. Each case was a silently
wrong result before; each test fails without its fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from brainvq_utils import metrics, pipeline, realism  # noqa: E402
from brainvq_utils.errors import BrainVQError  # noqa: E402
from brainvq_utils.images import as_images  # noqa: E402
from brainvq_utils.paths import notebooks_dir  # noqa: E402
from brainvq_utils.vqvae import build_vqvae  # noqa: E402


def brains(n=4, size=32, seed=0):
    """uint8 'slices': a bright disc with noise, as an 8-bit file holds them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2)
    out = disc[None] * rng.integers(100, 230, (n, size, size)) + rng.integers(0, 20, (n, size, size))
    return np.clip(out, 0, 255).astype(np.uint8)[..., None]


# ----------------------------------------------------------------------------- 5. images of any dtype
def test_ssim_of_8_bit_arrays_is_the_ssim_of_the_images_in_0_1():
    a, b = brains(seed=1), brains(seed=2)
    scaled = metrics.ssim(a / 255.0, b / 255.0)
    np.testing.assert_allclose(metrics.ssim(a, b), scaled, atol=1e-6)
    best, where = metrics.nearest_neighbour_ssim(a, b)
    best_scaled, where_scaled = metrics.nearest_neighbour_ssim(a / 255.0, b / 255.0)
    np.testing.assert_allclose(best, best_scaled, atol=1e-6)
    np.testing.assert_array_equal(where, where_scaled)
    np.testing.assert_allclose(realism.brain_fraction(a), realism.brain_fraction(a / 255.0))


@pytest.mark.parametrize("images,words", [
    (brains().astype(np.float32), "range over [0, 2"),                     # 0-255 floats: "divide by 255"
    (np.full((2, 32, 32, 1), np.nan, np.float32), "NaN"),
    (np.zeros((2, 32, 32, 3), np.float32), "3 channels"),
    (brains().astype(np.int64), "int64 integers"),
    (np.zeros((2, 32, 32, 1), bool), "boolean"),
    (np.full((2, 32, 32, 1), -0.5, np.float32), "range over [-0.5"),
])
def test_images_that_are_not_grey_in_0_1_are_refused_naming_the_argument(images, words):
    with pytest.raises(BrainVQError) as err:
        metrics.ssim(images, np.zeros((2, 32, 32, 1), np.float32))
    message = str(err.value)
    assert "ssim's first images" in message and words in message and "\n" not in message


def test_the_vqvae_takes_8_bit_images_as_images_in_0_1_and_refuses_a_wrong_size():
    model = build_vqvae(32, num_codes=8, code_dim=4, channels=16, res_blocks=1)
    x = brains()
    np.testing.assert_array_equal(np.asarray(model.encode(x)), np.asarray(model.encode(x / 255.0)))
    np.testing.assert_allclose(np.asarray(model.reconstruct(x)), np.asarray(model.reconstruct(x / 255.0)))
    with pytest.raises(BrainVQError, match="the images to encode are 64x64 pixels but 32x32 are needed"):
        model.encode(np.zeros((1, 64, 64, 1), np.float32))
    with pytest.raises(BrainVQError, match="the images to reconstruct .* divide by 255"):
        model.reconstruct(x.astype(np.float32))


def test_as_images_converts_only_what_it_documents():
    assert as_images(np.full((5, 6), 255, np.uint8)).tolist() == np.ones((1, 5, 6, 1)).tolist()
    assert as_images(np.full((2, 5, 6), 65535, np.uint16)).max() == 1.0
    np.testing.assert_array_equal(as_images(np.array([[1.0005, -0.0004]])), [[[[1.0], [0.0]]]])   # rounding


# ----------------------------------------------------------------------------- 6. papermill's parameters
def test_injected_parameters_are_those_the_parameters_cell_does_not_declare():
    history = ["", "import os", '# Parameters (papermill overrides this cell)\nprofile = "demo"\nrun_dir = None\n',
               "# Parameters\nrun_dir = 2024\nimage_size = 48\nimagesize = 4\n", "ctx = ..."]
    namespace = {"run_dir": 2024, "image_size": 48, "imagesize": 4}
    assert pipeline.injected_parameters(history, namespace) == {"image_size": 48, "imagesize": 4}
    assert pipeline.injected_parameters(history[:3], namespace) == {}          # nothing injected (nbval, JupyterLab)


def test_start_reads_papermill_typed_values_as_the_text_they_were(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ctx = pipeline.start("smoke", "synthetic", None, 2024, '{"data_dir": 7, "skip_bad": 1}', retrain="no")
    assert ctx.run_dir == Path("2024") and (tmp_path / "2024").is_dir()
    assert ctx.params["data_dir"] == str(tmp_path / "7") and ctx.params["skip_bad"] is True
    assert ctx.retrain is False
    assert "run_dir=2024 arrived as a number" in capsys.readouterr().out
    with pytest.raises(BrainVQError, match="retrain='maybe' must be true or false"):
        pipeline.start("smoke", run_dir=str(tmp_path / "r"), retrain="maybe")


# ----------------------------------------------------------------------------- 7. a relative data folder
def test_a_relative_data_dir_is_recorded_absolute_for_the_notebooks_after_01(tmp_path, monkeypatch):
    from brainvq_utils.synthetic import build_cohort
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    build_cohort(tmp_path / "here" / "cohort", subjects=20, size=32, workers=1)
    monkeypatch.chdir(tmp_path / "here")
    ctx = pipeline.start("smoke", "auto", "cohort", str(tmp_path / "run"))
    ds = pipeline.open_dataset(ctx.data)
    pipeline.record_dataset(ctx, ds, ds.summary(image_size=32, max_images_for_stats=4))
    monkeypatch.chdir(tmp_path / "elsewhere")        # 02, run later from another working directory
    again = pipeline.start("smoke", run_dir=str(tmp_path / "run"))
    cfg = pipeline.dataset_config_from_run(again)
    assert cfg.data_dir == str(tmp_path / "here" / "cohort")
    assert len(pipeline.open_dataset(cfg).train) == len(ds.train)


# ----------------------------------------------------------------------------- 6 and 7 through papermill itself
def papermill(args, cwd, env):
    return subprocess.run([sys.executable, "-m", "papermill", str(notebooks_dir() / "01_data_exploration.ipynb"),
                           "out.ipynb", "-k", "python3", "--cwd", str(cwd), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_papermill_applies_an_undeclared_known_parameter_and_stops_on_an_unknown_one(tmp_path):
    from brainvq_utils.synthetic import build_cohort
    build_cohort(tmp_path / "cohort", subjects=20, size=64, workers=1)
    env = {**os.environ, "BRAINVQ_PROFILE": "smoke", "TF_CPP_MIN_LOG_LEVEL": "3", "BRAINVQ_HEADLESS": "1"}
    run = tmp_path / "run"
    res = papermill(["-p", "profile", "smoke", "-p", "dataset", "auto", "-p", "data_dir", "cohort",
                     "-p", "run_dir", str(run), "-p", "image_size", "48"], tmp_path, env)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((run / "dataset.json").read_text())
    assert record["config"]["image_size"] == 48                                # smoke's own size is 32
    assert record["config"]["data_dir"] == str(tmp_path / "cohort")            # absolute, for 02 run elsewhere
    assert record["found"][0].endswith(f"synthetic layout in {tmp_path / 'cohort'}")   # what 01 printed first
    assert record["found"][2].split()[:3] == ["train", str(record["summary"]["images"]["train"]), "16"]
    out = json.loads((tmp_path / "out.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", []))
    assert "image_size=48 is not in this notebook's parameters cell: applied as an override" in text
    res = papermill(["-p", "profile", "smoke", "-p", "run_dir", str(tmp_path / "run2"), "-p", "imagesize", "48"],
                    tmp_path, env)
    assert res.returncode != 0
    assert "papermill passed -p imagesize 48, which is neither in this notebook's parameters cell nor a brainvq " \
           "parameter" in res.stderr + res.stdout
