"""Profiles and per-stage configurations.

A profile is a flat dict of parameters (``smoke`` for CI, ``demo`` for the embedded
cohort on a laptop CPU, ``full`` for OASIS/ADNI at native size on a GPU). Any
parameter can be overridden on its own (``-p key=value`` on the command line, the
``overrides`` dict in a notebook). Each stage reads its own small frozen dataclass from
the flat parameters and saves it next to what it made.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields

from .errors import BrainVQError


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"      # synthetic | oasis | adni | folder | nifti | auto
    data_dir: str | None = None     # None: the profile's synthetic cohort under data/
    image_size: int = 128           # square side the pipeline resizes/pads to
    subjects: int = 100             # synthetic cohort only
    synth_size: int = 256           # synthetic cohort only: side of the PNGs on disk
    batch_size: int = 8             # small batches converge fastest per second on a CPU
    seed: int = 0
    skip_bad: bool = False          # skip unreadable images (listed) instead of stopping
    validate_fraction: float = 0.1  # adni/folder/nifti: share of train carved out
    test_fraction: float = 0.1      # folder/nifti: share of the subjects held out for testing

    def __post_init__(self):
        _check_types(self)
        _positive(self, "image_size", "subjects", "synth_size", "batch_size")
        if self.image_size < 16:
            raise BrainVQError(f"image_size={self.image_size} is too small; use 16 or more")
        if not 0.0 < self.validate_fraction < 1.0:
            raise BrainVQError(f"validate_fraction={self.validate_fraction} must lie in (0, 1), e.g. 0.1")
        if not 0.0 < self.test_fraction < 1.0 or self.validate_fraction + self.test_fraction >= 1.0:
            raise BrainVQError(f"test_fraction={self.test_fraction} must lie in (0, 1) and leave subjects to train "
                               f"on beside validate_fraction={self.validate_fraction}, e.g. 0.1")


@dataclass(frozen=True)
class VQVAEConfig:
    architecture: str = "residual"  # residual | keras_io (the anchor)
    num_codes: int = 512
    code_dim: int = 16
    channels: int = 64
    res_blocks: int = 2
    downsample: int = 4
    beta: float = 0.25
    update: str = "ema"             # ema | gradient
    decay: float = 0.99
    restart_below: float = 1.0
    learning_rate: float = 1e-3
    ssim_weight: float = 0.02       # loss = MSE + ssim_weight * (1 - SSIM); 0: plain MSE
    epochs: int = 20
    steps_per_epoch: int = 0        # 0: one pass over the training split per epoch
    time_budget_s: float = 0.0      # 0: no limit; else stop after this many training seconds
    seed: int = 0

    def __post_init__(self):
        _check_types(self)
        _positive(self, "num_codes", "code_dim", "channels", "epochs", "learning_rate")
        if self.steps_per_epoch < 0:
            raise BrainVQError(f"steps_per_epoch={self.steps_per_epoch} must be 0 (a full pass) or positive")
        if self.res_blocks < 0:
            raise BrainVQError(f"res_blocks={self.res_blocks} must be 0 or more")
        if self.ssim_weight < 0:
            raise BrainVQError(f"ssim_weight={self.ssim_weight} must be 0 or positive")
        if self.time_budget_s < 0:
            raise BrainVQError(f"time_budget_s={self.time_budget_s} must be 0 (no limit) or positive")


PRECISIONS = ("float32", "mixed_bfloat16", "auto")
PRIOR_ARCHITECTURES = ("layout", "maskgit", "gated", "pixelcnn")   # brainvq_utils.priors.ARCHITECTURES (a test checks)


@dataclass(frozen=True)
class PriorConfig:
    # The two-level prior is the default: at equal training time on the demo's codes it broke fewer
    # outlines than the one-stage gated prior at the same AUC (`brainvq bench prior`, docs/results.md).
    prior_arch: str = "layout"        # layout | maskgit | gated | pixelcnn (the keras.io baseline)
    prior_channels: int = 64          # gated / pixelcnn: feature channels
    prior_layers: int = 8             # gated layers / pixelcnn residual blocks
    prior_kernel: int = 3
    prior_location: bool = True       # gated prior: learn where on the grid each code lies
    prior_level_location: bool = True  # gated prior: and a coarse map of it per slice position
    layout_cell: int = 4              # layout prior: codes per side of one block of the coarse layout
    layout_channels: int = 32         # layout prior: the layout stage's channels
    layout_layers: int = 4            # layout prior: the layout stage's gated layers
    maskgit_channels: int = 128       # maskgit: token width
    maskgit_layers: int = 4           # maskgit: transformer blocks
    maskgit_heads: int = 4
    maskgit_patch: int = 2            # maskgit: codes per token side (2: a 2x2 block of codes per token)
    condition_on_position: bool = True  # slice position, where the data set knows it
    condition_on_label: bool = True     # class (AD/NC), where the data set has labels
    prior_learning_rate: float = 2e-3
    prior_batch_size: int = 32
    prior_epochs: int = 30
    prior_time_budget_s: float = 0.0  # 0: no limit
    prior_precision: str = "float32"  # float32 | mixed_bfloat16 | auto (bfloat16 where the GPU or CPU has it natively)
    prior_seed: int = 0

    def __post_init__(self):
        _check_types(self)
        _positive(self, "prior_channels", "prior_layers", "prior_kernel", "prior_learning_rate",
                  "prior_batch_size", "prior_epochs", "maskgit_channels", "maskgit_layers", "maskgit_heads",
                  "maskgit_patch", "layout_cell", "layout_channels", "layout_layers")
        if self.prior_arch not in PRIOR_ARCHITECTURES:
            raise BrainVQError(f"prior_arch={self.prior_arch!r} is not known; use one of {PRIOR_ARCHITECTURES}")
        if self.maskgit_channels % self.maskgit_heads:
            raise BrainVQError(f"maskgit_channels={self.maskgit_channels} must be divisible by "
                               f"maskgit_heads={self.maskgit_heads}, e.g. 128 and 4")
        if self.prior_kernel % 2 == 0:
            raise BrainVQError(f"prior_kernel={self.prior_kernel} must be odd, e.g. 3 or 5")
        if self.prior_time_budget_s < 0:
            raise BrainVQError(f"prior_time_budget_s={self.prior_time_budget_s} must be 0 (no limit) or positive")
        if self.prior_precision not in PRECISIONS:
            raise BrainVQError(f"prior_precision={self.prior_precision!r} is not known; use one of {PRECISIONS}")

    def hyperparameters(self, num_positions: int = 0) -> dict:
        """The settings of the chosen architecture, as ``priors.build_prior`` takes them, for a
        prior conditioned on ``num_positions`` slice positions (0: none)."""
        if self.prior_arch == "maskgit":
            return dict(channels=self.maskgit_channels, num_layers=self.maskgit_layers, heads=self.maskgit_heads,
                        patch=self.maskgit_patch)
        common = dict(channels=self.prior_channels, num_layers=self.prior_layers, kernel_size=self.prior_kernel)
        if self.prior_arch not in ("gated", "layout"):
            return common
        level = self.prior_level_location and self.prior_location and num_positions > 0
        out = {**common, "location": self.prior_location, "level_location": level}
        if self.prior_arch == "layout":
            out.update(layout_cell=self.layout_cell, layout_channels=self.layout_channels, layout_layers=self.layout_layers)
        return out


@dataclass(frozen=True)
class SamplingConfig:
    n_samples: int = 200
    temperature: float = 1.0
    top_k: int = 0                    # 0: all codes
    sampler: str = "fast"             # autoregressive priors: fast | reference
    decode_steps: int = 12            # iterative (maskgit) priors: parallel decoding steps
    choice_temperature: float = 4.5   # iterative priors: randomness of which draws are kept (annealed to 0)
    realism_folds: int = 5            # folds of the two-sample realism test (grouped by subject)
    sample_seed: int = 0

    def __post_init__(self):
        _check_types(self)
        _positive(self, "n_samples", "temperature", "decode_steps")
        if self.realism_folds < 2:
            raise BrainVQError(f"realism_folds={self.realism_folds} must be 2 or more")
        if self.choice_temperature < 0:
            raise BrainVQError(f"choice_temperature={self.choice_temperature} must be 0 (keep the most "
                               "confident draws) or positive")
        if self.top_k < 0:
            raise BrainVQError(f"top_k={self.top_k} must be 0 (all codes) or positive")
        if self.sampler not in ("fast", "reference"):
            raise BrainVQError(f"sampler={self.sampler!r} is not known; use 'fast' or 'reference'")


@dataclass(frozen=True)
class RunConfig:
    tensorboard: bool = False         # write TensorBoard logs (scalars and images) to <run_dir>/logs/
    devices: str = "auto"             # auto (every GPU/TPU, or one CPU device) | 1 | N: data-parallel training

    def __post_init__(self):
        from .devices import parse
        if isinstance(self.devices, int) and not isinstance(self.devices, bool):
            object.__setattr__(self, "devices", str(self.devices))   # overrides={"devices": 2}
        _check_types(self)
        parse(self.devices)


STAGES = (DataConfig, VQVAEConfig, PriorConfig, SamplingConfig, RunConfig)

# Environment variables that set a parameter's default for every profile (an override still wins):
# the Colab setup cell sets BRAINVQ_PRECISION to what the runtime's GPU supports.
ENVIRONMENT_DEFAULTS = {"BRAINVQ_PRECISION": "prior_precision"}

PROFILES: dict[str, dict] = {
    # CI: every notebook in well under a minute on 2 CPU cores.
    # 20 subjects, so that the validation and test splits hold 2 each for the grouped realism folds.
    "smoke": dict(image_size=32, subjects=20, synth_size=64, batch_size=8, num_codes=32,
                  code_dim=8, channels=16, res_blocks=1, epochs=4, learning_rate=2e-3,
                  prior_channels=16, prior_layers=3, prior_epochs=3, layout_channels=8, layout_layers=2, maskgit_channels=16, maskgit_layers=1,
                  maskgit_heads=2, n_samples=32, decode_steps=4, realism_folds=2),
    # The embedded cohort on a 2-core laptop CPU: VQ-VAE in 5 minutes, prior in 5, all within 15.
    # (A 240 s VQ-VAE run reached test SSIM 0.92 only: it stalled after a poor first epoch.)
    # Small prior batches learn most per CPU second (batch 4 beat 8, 16 and 32 in 5 minutes), and
    # bfloat16 arithmetic, where the CPU has it, fits more epochs into the same 5 minutes (6 instead of 5
    # at 48 channels: `brainvq bench prior --precisions float32 mixed_bfloat16`, README).
    # 48 channels reach the bits of 64 in 5 minutes (6 epochs instead of 4) with better samples.
    # Samples at T = 0.8 balance nearest-neighbour SSIM against diversity (`brainvq bench temperature`).
    # 128 codes instead of 512 (test SSIM 0.973 against 0.979 in one-off runs) make the prior's job
    # smaller: the two-sample AUC of its samples against reconstructions fell from 0.96 to 0.86-0.91.
    # 270 s of prior training leave room in the 13 minutes for the realism scores of notebook 05.
    "demo": dict(time_budget_s=300.0, num_codes=128, prior_time_budget_s=270.0, prior_channels=48,
                 prior_batch_size=4, prior_learning_rate=1.5e-3, prior_precision="auto", temperature=0.8),
    # OASIS/ADNI at native size on a GPU.
    # The prior sees 64x64 code maps here: more channels, and MaskGIT groups 4x4 codes per token
    # (256 tokens, as in the demo).
    "full": dict(image_size=256, batch_size=32, num_codes=512, code_dim=64, channels=128,
                 downsample=4, epochs=60, learning_rate=1e-3, prior_channels=128, prior_layers=12,
                 prior_batch_size=16, maskgit_channels=256, maskgit_layers=8, maskgit_heads=8, maskgit_patch=4),
}


def _positive(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise BrainVQError(f"{name}={value!r} must be a positive number")


def _check_types(cfg):
    """Every field holds the type of its default (ints may stand for floats)."""
    for f in fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if default is None or value is None and default is None:
            continue
        ok = (isinstance(value, type(default)) or
              (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)))
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise BrainVQError(f"parameter {f.name}={value!r} must be a finite {type(default).__name__}")


def did_you_mean(key: str) -> str:
    """``" (did you mean image_size?)"`` for a misspelt parameter name, or ``""``."""
    import difflib
    close = difflib.get_close_matches(str(key), list(known_keys()), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def known_keys() -> dict[str, type]:
    return {f.name: f.type for stage in STAGES for f in fields(stage)}


def _coerce(key: str, value, default):
    """Turn a command-line string (or a number that papermill or JSON typed by its look) into the type of
    the default: ``2024`` for a text parameter is ``"2024"``, ``1`` for a yes/no parameter is True."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if default is None or isinstance(default, str):
            return str(value)
        if isinstance(default, bool) and value in (0, 1):
            return bool(value)
    if not isinstance(value, str) or isinstance(default, str):
        return value
    if value.lower() in ("none", "null"):
        if default is None:
            return None
        raise BrainVQError(f"parameter {key} cannot be {value!r}; give a {type(default).__name__}")
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
    except ValueError:
        raise BrainVQError(f"parameter {key}={value!r} is not a valid {type(default).__name__}") from None
    return value


def load_params(profile: str = "demo", overrides: dict | None = None) -> dict:
    """The flat parameters of a profile with ``overrides`` applied and checked."""
    if profile not in PROFILES:
        raise BrainVQError(f"profile {profile!r} is not known; use one of {sorted(PROFILES)}")
    defaults = {f.name: f.default for stage in STAGES for f in fields(stage)}
    params = {**defaults, **PROFILES[profile]}
    for variable, key in ENVIRONMENT_DEFAULTS.items():
        if os.environ.get(variable):
            params[key] = _coerce(key, os.environ[variable], defaults[key])
            try:
                stage_config(next(st for st in STAGES if key in {f.name for f in fields(st)}), params)
            except BrainVQError as err:
                raise BrainVQError(f"{err} (it came from the environment variable {variable}; unset it or "
                                   f"give one of the values named)") from None
    for key, value in (overrides or {}).items():
        if key not in defaults:
            raise BrainVQError(f"parameter {key!r} is not known{did_you_mean(key)}; known parameters: "
                               f"{', '.join(sorted(defaults))}")
        params[key] = _coerce(key, value, defaults[key])
    params["profile"] = profile
    for stage in STAGES:   # validate every stage now, not half-way through a run
        stage_config(stage, params)
    side = params["image_size"] // params["downsample"]
    if params["prior_arch"] == "layout" and side % params["layout_cell"]:
        raise BrainVQError(f"layout_cell={params['layout_cell']} does not divide the {side}x{side} code grid; use a "
                           f"divisor of {side}, e.g. 4")
    codes_in_grid = (params["image_size"] // params["downsample"]) ** 2
    if params["decode_steps"] > codes_in_grid:
        raise BrainVQError(f"decode_steps={params['decode_steps']} is more than the {codes_in_grid} codes of the "
                           f"{params['image_size'] // params['downsample']}-square code grid; use at most that, e.g. 12")
    return params


def stage_config(cls, params: dict):
    """The stage's frozen dataclass from flat parameters (extra keys are ignored)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names})


def save_config(cfg, path) -> None:
    from .runs import write_json
    write_json(path, dataclasses.asdict(cfg))
