"""Tests of brainvq_utils.config: profiles, overrides, validation, stage configs."""

import dataclasses
import json

import pytest

from brainvq_utils import config
from brainvq_utils.config import PROFILES, DataConfig, VQVAEConfig, load_params, save_config, stage_config
from brainvq_utils.errors import BrainVQError

ALL_KEYS = {f.name for cls in config.STAGES for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_load_params_each_profile(profile):
    params = load_params(profile)
    assert params["profile"] == profile
    assert set(params) == ALL_KEYS | {"profile"}
    for key, value in PROFILES[profile].items():
        assert params[key] == value, key
    # Keys the profile leaves alone keep the dataclass defaults.
    defaults = {f.name: f.default for cls in config.STAGES for f in dataclasses.fields(cls)}
    for key in ALL_KEYS - set(PROFILES[profile]):
        assert params[key] == defaults[key], key
    data, vq = stage_config(DataConfig, params), stage_config(VQVAEConfig, params)
    assert data.image_size == params["image_size"] and vq.epochs == params["epochs"]


def test_profiles_differ():
    smoke, full = load_params("smoke"), load_params("full")
    assert smoke["image_size"] < full["image_size"]
    assert smoke["epochs"] < full["epochs"]


def test_default_profile_is_demo():
    assert load_params()["profile"] == "demo"


def test_overrides_are_coerced_from_strings():
    params = load_params("smoke", {"epochs": "5", "learning_rate": "1e-3", "skip_bad": "true",
                                   "validate_fraction": "0.25", "data_dir": "/some/where",
                                   "dataset": "oasis"})
    assert params["epochs"] == 5 and type(params["epochs"]) is int
    assert params["learning_rate"] == pytest.approx(1e-3) and type(params["learning_rate"]) is float
    assert params["skip_bad"] is True
    assert params["validate_fraction"] == 0.25
    assert params["data_dir"] == "/some/where"
    assert params["dataset"] == "oasis"
    # Other profile values survive an override of one key.
    assert params["image_size"] == PROFILES["smoke"]["image_size"]


@pytest.mark.parametrize("text,expected", [("true", True), ("True", True), ("1", True), ("yes", True),
                                           ("false", False), ("0", False), ("no", False)])
def test_bool_coercion(text, expected):
    assert load_params("demo", {"skip_bad": text})["skip_bad"] is expected


def test_non_string_overrides_are_kept():
    params = load_params("demo", {"epochs": 3, "beta": 0.5, "skip_bad": True})
    assert (params["epochs"], params["beta"], params["skip_bad"]) == (3, 0.5, True)


def test_none_for_optional_data_dir():
    assert load_params("demo", {"data_dir": "none"})["data_dir"] is None


def test_unknown_key_names_the_key():
    with pytest.raises(BrainVQError) as err:
        load_params("demo", {"nokey": "1"})
    assert "nokey" in str(err.value)
    assert "epochs" in str(err.value)   # lists the known parameters


def test_unknown_profile_lists_profiles():
    with pytest.raises(BrainVQError) as err:
        load_params("nonsense")
    msg = str(err.value)
    assert "nonsense" in msg
    for name in PROFILES:
        assert name in msg


@pytest.mark.parametrize("value", [0, -1, "0", "-1"])
def test_non_positive_epochs_rejected(value):
    with pytest.raises(BrainVQError, match="epochs"):
        load_params("smoke", {"epochs": value})


@pytest.mark.parametrize("key,value", [("epochs", "abc"), ("epochs", "2.5"), ("learning_rate", "fast"),
                                       ("skip_bad", "maybe"), ("image_size", "")])
def test_bad_type_names_the_key(key, value):
    with pytest.raises(BrainVQError) as err:
        load_params("demo", {key: value})
    assert key in str(err.value)


@pytest.mark.parametrize("overrides,word", [
    ({"image_size": "8"}, "image_size"),
    ({"validate_fraction": "1.5"}, "validate_fraction"),
    ({"validate_fraction": "0"}, "validate_fraction"),
    ({"res_blocks": "-1"}, "res_blocks"),
    ({"time_budget_s": "-5"}, "time_budget_s"),
    ({"batch_size": "0"}, "batch_size"),
    ({"learning_rate": "0"}, "learning_rate"),
    ({"skip_bad": True, "epochs": True}, "epochs"),   # a bool is not a number
    ({"prior_precision": "float16"}, "prior_precision"),
])
def test_invalid_values_rejected_early(overrides, word):
    with pytest.raises(BrainVQError, match=word):
        load_params("demo", overrides)


@pytest.mark.parametrize("key", ["validate_fraction", "res_blocks", "time_budget_s", "beta",
                                 "steps_per_epoch", "ssim_weight", "epochs"])
def test_none_for_numeric_key_is_a_user_error(key):
    with pytest.raises(BrainVQError, match=key):
        load_params("demo", {key: "none"})


@pytest.mark.parametrize("key", ["learning_rate", "time_budget_s"])
def test_non_finite_numbers_are_rejected(key):
    with pytest.raises(BrainVQError, match=key):
        load_params("demo", {key: "nan"})


def test_stage_config_ignores_extra_keys():
    params = {"image_size": 64, "batch_size": 4, "epochs": 3, "profile": "smoke", "junk": object()}
    data = stage_config(DataConfig, params)
    assert data == DataConfig(image_size=64, batch_size=4)
    vq = stage_config(VQVAEConfig, params)
    assert vq == VQVAEConfig(epochs=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vq.epochs = 4


def test_stage_config_validates():
    with pytest.raises(BrainVQError, match="epochs"):
        stage_config(VQVAEConfig, {"epochs": 0})


def test_known_keys_cover_both_stages():
    assert set(config.known_keys()) == ALL_KEYS


@pytest.mark.parametrize("cfg", [DataConfig(image_size=64, data_dir="/x", skip_bad=True),
                                 VQVAEConfig(epochs=7, learning_rate=3e-4, update="gradient")])
def test_save_config_round_trips(tmp_path, cfg):
    path = tmp_path / "nested" / "dir" / "config.json"
    save_config(cfg, path)
    loaded = json.loads(path.read_text())
    assert loaded == dataclasses.asdict(cfg)
    assert type(cfg)(**loaded) == cfg


def test_prior_settings_follow_the_chosen_architecture():
    from brainvq_utils import priors
    from brainvq_utils.config import PRIOR_ARCHITECTURES, PriorConfig
    assert PRIOR_ARCHITECTURES == priors.ARCHITECTURES
    small = dict(prior_channels=8, prior_layers=1, maskgit_channels=8, maskgit_layers=1, maskgit_heads=2)
    for arch in PRIOR_ARCHITECTURES:   # each architecture gets settings it knows, and builds from them
        hyper = PriorConfig(prior_arch=arch, **small).hyperparameters()
        assert set(hyper) <= set(priors.get(arch).hyperparameters)
        extra = {"brain_codes": [0] + [1] * 15} if arch == "layout" else {}     # the two-level prior reads layouts
        assert priors.prior_info(priors.build_prior(arch, 16, (4, 4), **hyper, **extra))["arch"] == arch
    assert PriorConfig(prior_arch="maskgit", maskgit_channels=96).hyperparameters()["channels"] == 96
    assert PriorConfig(prior_arch="gated", prior_channels=40).hyperparameters()["channels"] == 40
    with pytest.raises(BrainVQError, match="prior_arch='transformer' is not known"):
        PriorConfig(prior_arch="transformer")
    with pytest.raises(BrainVQError, match="maskgit_channels=100 must be divisible by maskgit_heads=8"):
        PriorConfig(maskgit_channels=100, maskgit_heads=8)


@pytest.mark.parametrize("override,match", [
    ({"decode_steps": 0}, "decode_steps=0 must be a positive number"),
    ({"realism_folds": 1}, "realism_folds=1 must be 2 or more"),
    ({"choice_temperature": -0.5}, "choice_temperature=-0.5"),
    ({"decode_steps": 1025}, "decode_steps=1025 is more than the 1024 codes of the 32-square code grid"),
])
def test_bad_sampling_settings(override, match):
    with pytest.raises(BrainVQError, match=match):
        load_params("demo", override)
