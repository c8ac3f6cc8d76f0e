"""The VQ-VAE: encoder, vector quantiser, decoder (Keras 3, backend-agnostic).

The objective for an input x, encoder output z_e(x), nearest codebook vector e and
decoder output x_hat (van den Oord et al. 2017, "Neural Discrete Representation
Learning"):

    L = ||x - x_hat||^2  +  ||sg[z_e] - e||^2  +  beta * ||z_e - sg[e]||^2
        reconstruction      codebook                commitment

``sg`` is stop-gradient. The argmin that picks ``e`` has no gradient, so the decoder's
gradient is copied straight through to the encoder (the straight-through estimator):
``z_q = z_e + sg(e - z_e)`` equals ``e`` forward and has the gradient of ``z_e``.

With ``update="ema"`` the codebook term is replaced by exponential moving averages of
the vectors each code wins (van den Oord et al., appendix; Razavi et al. 2019), with
Laplace smoothing of the counts. In both modes codes whose moving-average usage falls
below ``restart_below`` vectors per batch are restarted from current encoder outputs,
drawn with probability proportional to their squared quantisation error; since every
count starts at zero, the first training batch initialises the whole codebook this way.

Every state change happens inside ``call`` on non-trainable variables (as
BatchNormalization does), so the same code trains on TensorFlow, JAX and PyTorch. On
several devices the counts, sums and restart candidates come from the whole global batch
(``devices.all_sum``, ``all_gather``), so every replica holds the same codebook as one
device would (``devices``' docstring says why this is needed under MirroredStrategy).
"""

from __future__ import annotations

import threading

import keras
from keras import layers, ops

from . import devices
from .errors import BrainVQError
from .images import as_images, concrete_numpy
from .losses import ssim_per_image

PACKAGE = "brainvq"


@keras.saving.register_keras_serializable(package=PACKAGE)
class VectorQuantizer(layers.Layer):
    """Maps each D-dimensional vector of a (B, h, w, D) tensor to its nearest code.

    Args:
        num_codes: codebook size K.
        code_dim: vector length D (the encoder's last axis).
        beta: commitment cost.
        update: ``"ema"`` (moving averages) or ``"gradient"`` (codebook loss).
        decay: EMA decay, for the codebook (ema) and for the usage counts (both).
        epsilon: Laplace smoothing of the EMA counts.
        restart_below: a code whose EMA count (vectors won per batch) is below this is
            restarted from an encoder output; 0 disables restarts (and data init).
        seed: seed of the restart draws.
    """

    def __init__(self, num_codes=256, code_dim=32, beta=0.25, update="ema", decay=0.99,
                 epsilon=1e-5, restart_below=1.0, seed=None, **kwargs):
        # Always float32, whatever the global dtype policy: in float16 the usage counts of one
        # 256x256 batch overflow (65,504 is float16's largest number) and the codebook fills with
        # inf and NaN; the distances and the EMA sums lose the digits that pick the nearest code.
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if update not in ("ema", "gradient"):
            raise BrainVQError(f"codebook update {update!r} is not known; use 'ema' or 'gradient'")
        if int(num_codes) < 2 or int(code_dim) < 1:
            raise BrainVQError(f"codebook of {num_codes} codes of {code_dim} dims: need >= 2 codes, >= 1 dim")
        if not 0.0 < float(decay) < 1.0:
            raise BrainVQError(f"EMA decay {decay} must lie strictly between 0 and 1, e.g. 0.99")
        self.num_codes = int(num_codes)
        self.code_dim = int(code_dim)
        self.beta = float(beta)
        self.update = update
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.restart_below = float(restart_below)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # The commitment (and codebook) loss of the last call in this thread; VQVAE.compute_loss adds
        # it. Not ``add_loss``: under MirroredStrategy the replicas' threads share a layer's loss list,
        # and the all-reduces in ``call`` let one replica clear or read another's entry.
        self._loss_slot = threading.local()

    def build(self, input_shape):
        if input_shape[-1] != self.code_dim:
            raise BrainVQError(
                f"encoder gives vectors of {input_shape[-1]} dims but the codebook has {self.code_dim}")
        k, d = self.num_codes, self.code_dim
        init = keras.initializers.RandomUniform(-1.0 / k, 1.0 / k, seed=self.seed)
        # ``base`` holds the codebook (ema) or the part of it that restarts set (gradient).
        # State set in ``call``: computed from the global batch, identical on every replica, and
        # written from replica 0 only ("only_first_replica"), so that copies cannot drift.
        def state(shape, name, initializer="zeros"):
            return self.add_weight(shape=shape, initializer=initializer, trainable=False, name=name,
                                   aggregation="only_first_replica")

        self.base = state((k, d), "base", init)
        if self.update == "gradient":
            self.delta = self.add_weight(shape=(k, d), initializer="zeros", trainable=True, name="delta")
        else:
            self.ema_sum = state((k, d), "ema_sum")
        self.ema_count = state((k,), "ema_count")
        # Codes won since the last reset; a callback resets it every epoch.
        self.usage_counts = state((k,), "usage_counts")
        self.restarts = state((), "restarts")
        super().build(input_shape)

    @property
    def codebook(self):
        """The (K, D) codebook as a tensor."""
        if self.update == "gradient":
            return self.base + self.delta
        return ops.convert_to_tensor(self.base)

    def _distances(self, flat, codebook):
        return (ops.sum(flat**2, axis=1, keepdims=True)
                - 2.0 * ops.matmul(flat, ops.transpose(codebook))
                + ops.sum(codebook**2, axis=1)[None, :])

    def vq_loss(self):
        """The commitment loss (plus the codebook loss with ``update="gradient"``) of the last
        call in this thread: beta * mean((z - sg[e])^2) [+ mean((sg[z] - e)^2)]."""
        return getattr(self._loss_slot, "value", 0.0)

    def indices(self, z):
        """Code index of every vector: (B, h, w, D) -> (B, h, w) int32."""
        shape = ops.shape(z)
        flat = ops.reshape(z, (-1, self.code_dim))
        idx = ops.argmin(self._distances(flat, self.codebook), axis=1)
        return ops.cast(ops.reshape(idx, shape[:-1]), "int32")

    def lookup(self, indices):
        """Codebook vectors of a code map: (B, h, w) int -> (B, h, w, D)."""
        return ops.take(self.codebook, ops.cast(indices, "int32"), axis=0)

    def call(self, z, training=False):
        shape = ops.shape(z)
        flat = ops.reshape(z, (-1, self.code_dim))
        codebook = self.codebook
        dist = self._distances(flat, codebook)
        idx = ops.argmin(dist, axis=1)
        quantized = ops.reshape(ops.take(codebook, idx, axis=0), shape)

        z_sg, q_sg = ops.stop_gradient(z), ops.stop_gradient(quantized)
        loss = self.beta * ops.mean((z - q_sg) ** 2)
        if self.update == "gradient":
            loss = loss + ops.mean((z_sg - quantized) ** 2)
        self._loss_slot.value = loss
        if training:
            self._update_state(ops.stop_gradient(flat), idx, ops.min(ops.stop_gradient(dist), axis=1))
        # Straight-through estimator: forward value of the code, gradient of z.
        return z + ops.stop_gradient(quantized - z)

    def _update_state(self, flat, idx, min_dist):
        k = self.num_codes
        onehot = ops.one_hot(idx, k, dtype=flat.dtype)
        counts = devices.all_sum(ops.sum(onehot, axis=0))   # over the global batch
        self.usage_counts.assign(self.usage_counts + counts)
        ema_count = self.decay * self.ema_count + (1.0 - self.decay) * counts
        if self.update == "ema":
            sums = devices.all_sum(ops.matmul(ops.transpose(onehot), flat))
            ema_sum = self.decay * self.ema_sum + (1.0 - self.decay) * sums
            n = ops.sum(ema_count)
            smoothed = (ema_count + self.epsilon) / (n + k * self.epsilon) * n
            base = ema_sum / smoothed[:, None]
        else:
            base = ops.convert_to_tensor(self.base)
        if self.restart_below > 0:
            dead = ema_count < self.restart_below
            # Candidates drawn from the global batch in proportion to their squared quantisation
            # error; on several replicas each supplies the ones that lie in its shard.
            logits = ops.log(ops.maximum(devices.all_gather(min_dist), 1e-12))[None, :]
            pick = keras.random.categorical(logits, k, seed=self.seed_generator)[0]
            rows = ops.shape(flat)[0]
            local = pick - devices.shard_start(rows)
            mine = (local >= 0) & (local < rows)
            candidates = ops.take(flat, ops.clip(local, 0, rows - 1), axis=0)
            candidates = devices.all_sum(ops.where(mine[:, None], candidates, ops.zeros_like(candidates)))
            fresh = 2.0 * self.restart_below
            if self.update == "ema":
                base = ops.where(dead[:, None], candidates, base)
                ema_sum = ops.where(dead[:, None], candidates * fresh, ema_sum)
            else:
                base = ops.where(dead[:, None], candidates - self.delta, base)
            ema_count = ops.where(dead, fresh, ema_count)
            self.restarts.assign(self.restarts + ops.sum(ops.cast(dead, "float32")))
        self.ema_count.assign(ema_count)
        if self.update == "ema":
            self.ema_sum.assign(ema_sum)
        self.base.assign(base)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_codes=self.num_codes, code_dim=self.code_dim, beta=self.beta,
                      update=self.update, decay=self.decay, epsilon=self.epsilon,
                      restart_below=self.restart_below, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(layers.Layer):
    """x + conv1x1(relu(conv3x3(relu(x)))), as in the VQ-VAE paper."""

    def __init__(self, channels, hidden=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.hidden = int(hidden or channels)
        self.conv1 = layers.Conv2D(self.hidden, 3, padding="same")
        self.conv2 = layers.Conv2D(self.channels, 1)

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build((*input_shape[:-1], self.hidden))
        super().build(input_shape)

    def call(self, x):
        return x + self.conv2(ops.relu(self.conv1(ops.relu(x))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, hidden=self.hidden)
        return config


ARCHITECTURES = ("residual", "keras_io")


def check_downsample(downsample: int) -> int:
    if downsample not in (4, 8):
        raise BrainVQError(f"downsampling factor {downsample} is not supported; use 4 or 8")
    return downsample


def check_architecture(architecture: str, downsample: int) -> None:
    """The encoder/decoder arguments both builders share, checked before any layer is made."""
    check_downsample(downsample)
    if architecture not in ARCHITECTURES:
        raise BrainVQError(f"architecture {architecture!r} is not known; use one of {ARCHITECTURES}")


def build_encoder(image_shape, code_dim=32, channels=64, res_blocks=2, downsample=4,
                  architecture="residual", name="encoder"):
    """(H, W, 1) image -> (H/f, W/f, code_dim) vectors, f = ``downsample``."""
    check_architecture(architecture, downsample)
    inputs = keras.Input(shape=tuple(image_shape))
    if architecture == "keras_io":
        # The keras.io VQ-VAE example: two stride-2 convolutions and a 1x1 projection.
        x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
        x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
        return keras.Model(inputs, layers.Conv2D(code_dim, 1, padding="same", dtype="float32")(x), name=name)
    n_down = 2 if downsample == 4 else 3
    widths = [max(channels // 2 ** (n_down - 1 - i), 16) for i in range(n_down)]
    x = inputs
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, 4, strides=2, padding="same", name=f"down{i}")(x)
        x = layers.ReLU()(x) if i < n_down - 1 else x
    x = layers.Conv2D(channels, 3, padding="same")(x)
    for i in range(res_blocks):
        x = ResidualBlock(channels, name=f"res{i}")(x)
    x = layers.ReLU()(x)
    # The vectors to quantise, and (in the decoder) the image, come out in float32 under any dtype policy.
    return keras.Model(inputs, layers.Conv2D(code_dim, 1, name="to_codes", dtype="float32")(x), name=name)


def build_decoder(latent_shape, channels=64, res_blocks=2, downsample=4,
                  architecture="residual", name="decoder"):
    """(h, w, D) quantised vectors -> (h*f, w*f, 1) image."""
    check_architecture(architecture, downsample)
    inputs = keras.Input(shape=tuple(latent_shape))
    if architecture == "keras_io":
        x = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(inputs)
        x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(x)
        return keras.Model(inputs, layers.Conv2DTranspose(1, 3, padding="same", dtype="float32")(x), name=name)
    n_up = 2 if downsample == 4 else 3
    x = layers.Conv2D(channels, 3, padding="same")(inputs)
    for i in range(res_blocks):
        x = ResidualBlock(channels, name=f"res{i}")(x)
    for i in range(n_up):
        width = max(channels // 2 ** (i + 1), 16)
        x = layers.ReLU()(x)
        x = layers.Conv2DTranspose(width, 4, strides=2, padding="same", name=f"up{i}")(x)
    x = layers.ReLU()(x)
    # Linear output: a ReLU here can start dead (an all-black decoder for epochs). The model
    # clips to [0, 1] at inference, which still gives exact zeros in the background.
    outputs = layers.Conv2D(1, 3, padding="same", name="to_image", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


LOSS_TERMS = ("recon_mse", "ssim_term", "vq_loss")


@keras.saving.register_keras_serializable(package=PACKAGE)
class VQVAE(keras.Model):
    """Encoder -> VectorQuantizer -> decoder. ``model(x)`` returns reconstructions."""

    def __init__(self, encoder, quantizer, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        # The trained loss term by term, averaged over each epoch (``compute_loss``; notebook 02 plots them).
        # Keras tracks metrics held as attributes: they are reset every epoch and reach the logs.
        self.loss_terms = {name: keras.metrics.Mean(name=name) for name in LOSS_TERMS}

    @property
    def downsample(self) -> int:
        return int(self.encoder.input_shape[1] // self.encoder.output_shape[1])

    @property
    def latent_grid(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.encoder.output_shape[1:3])

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def build(self, input_shape):
        if not self.quantizer.built:
            self.quantizer.build(self.encoder.compute_output_shape(input_shape))
        self.built = True

    def call(self, x, training=False):
        out = self.decoder(self.quantizer(self.encoder(x), training=training))
        # The loss sees the raw output; callers get images in [0, 1].
        return out if training else ops.clip(out, 0.0, 1.0)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled reconstruction loss plus the quantiser's (``VectorQuantizer.vq_loss``).

        Each term is also tracked on its own (``loss_terms``, in the epoch logs): ``recon_mse``, the
        mean squared error; ``ssim_term``, ``ssim_weight * (1 - SSIM)``; ``vq_loss``, the commitment
        (and, with ``update="gradient"``, codebook) loss. They add up to the loss."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        vq = self.quantizer.vq_loss()
        if y is not None and y_pred is not None:
            target, pred = ops.stop_gradient(ops.cast(y, "float32")), ops.stop_gradient(ops.cast(y_pred, "float32"))
            mse = ops.mean((target - pred) ** 2)
            weight = float(getattr(self.loss, "ssim_weight", 0.0) or 0.0)
            ssim = weight * ops.mean(1.0 - ssim_per_image(target, pred)) if weight else ops.zeros(())
            batch = ops.cast(ops.shape(target)[0], "float32")   # weighted as Keras weighs the loss: by batch size
            for name, value in zip(LOSS_TERMS, (mse, ssim, ops.stop_gradient(vq))):
                self.loss_terms[name].update_state(value, sample_weight=batch)
        return loss + devices.replica_share(vq)

    def checked(self, x, name: str = "x"):
        """``x`` checked and converted by ``images.as_images`` (uint8 scaled to [0, 1]; NaN, out-of-range,
        colour or wrongly sized images refused) when it holds values now; a symbolic tensor as it is."""
        values = concrete_numpy(x)
        return x if values is None else as_images(values, name, size=self.encoder.input_shape[1:3])

    def encode(self, x):
        """Images (B, H, W, 1) -> code maps (B, h, w) int32."""
        return self.quantizer.indices(self.encoder(self.checked(x, "the images to encode")))

    def decode(self, codes):
        """Code maps (B, h, w) -> images (B, H, W, 1) clipped to [0, 1]."""
        return ops.clip(self.decoder(self.quantizer.lookup(codes)), 0.0, 1.0)

    def reconstruct(self, x):
        """Inference-time reconstruction in [0, 1]."""
        return self(self.checked(x, "the images to reconstruct"), training=False)

    def get_config(self):
        config = super().get_config()
        for key in ("encoder", "quantizer", "decoder"):
            config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        return config

    @classmethod
    def from_config(cls, config):
        parts = {key: keras.saving.deserialize_keras_object(config.pop(key))
                 for key in ("encoder", "quantizer", "decoder")}
        return cls(**parts, **config)


def build_vqvae(image_size=(128, 128), num_codes=256, code_dim=32, channels=64, res_blocks=2,
                downsample=4, beta=0.25, update="ema", decay=0.99, restart_below=1.0,
                architecture="residual", seed=0) -> VQVAE:
    """Build an unbuilt-weights-free VQ-VAE for (H, W, 1) images in [0, 1]."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    check_downsample(downsample)
    if architecture == "keras_io" and downsample != 4:
        raise BrainVQError("the keras_io architecture downsamples by 4 only")
    for side in (h, w):
        if side % downsample:
            raise BrainVQError(
                f"image size {side} is not divisible by the VQ-VAE downsampling factor {downsample}; "
                f"use e.g. {side - side % downsample or downsample} or {side - side % downsample + downsample}")
    encoder = build_encoder((h, w, 1), code_dim, channels, res_blocks, downsample, architecture)
    decoder = build_decoder((*encoder.output_shape[1:3], code_dim), channels, res_blocks,
                            downsample, architecture)
    quantizer = VectorQuantizer(num_codes, code_dim, beta=beta, update=update, decay=decay,
                                restart_below=restart_below, seed=seed, name="quantizer")
    model = VQVAE(encoder, quantizer, decoder, name="vqvae")
    model.build((None, h, w, 1))
    return model
