"""TensorBoard logs (``tensorboard=True``): read back, they hold the scalars and pictures of
both models, every epoch; nothing is written without the switch."""

import numpy as np

from brainvq_utils import tensorboard_logs, training
from brainvq_utils.config import PriorConfig, VQVAEConfig
from test_training import TINY, blobs, datasets, prior_datasets, stripes


def test_vqvae_and_prior_logs_hold_scalars_and_images(tmp_path):
    epochs = 2
    vqvae, _ = training.train_vqvae(*datasets(blobs()), VQVAEConfig(epochs=epochs, **TINY), 32, tmp_path,
                                    tensorboard=True, verbose=0)
    tags = tensorboard_logs.read_tags(tmp_path / "logs" / "vqvae")
    for key in ("train/epoch_loss", "validation/epoch_ssim", "train/epoch_codebook_usage",
                "train/epoch_perplexity"):
        assert tags.get(key) == ("scalar", list(range(epochs))), (key, sorted(tags))
    assert tags.get("images/reconstructions") == ("image", list(range(epochs))), sorted(tags)

    codes = stripes() % vqvae.num_codes          # maps the VQ-VAE can decode: its grid is 8x8
    codes = np.tile(codes, (1, 2, 2))
    cfg = PriorConfig(prior_arch="gated", prior_channels=8, prior_layers=1, prior_epochs=epochs, prior_batch_size=8)
    build = training.prior_builder(cfg, vqvae.num_codes, (8, 8), num_positions=4)
    training.train_prior(*prior_datasets(codes, np.arange(64) % 4), cfg, build, tmp_path, tensorboard=True,
                         vqvae=vqvae, verbose=0)
    tags = tensorboard_logs.read_tags(tmp_path / "logs" / "prior")
    for key in ("train/epoch_loss", "train/epoch_bits_per_code", "validation/epoch_bits_per_code"):
        assert tags.get(key) == ("scalar", list(range(epochs))), (key, sorted(tags))
    assert tags.get("images/samples") == ("image", list(range(epochs))), sorted(tags)


def test_image_log_writes_one_strip_per_epoch_that_reads_back(tmp_path):
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2

    fixed = np.linspace(0, 1, 3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8, 1)
    log = tensorboard_logs.ImageLog(tmp_path, lambda model: {"pictures": fixed})
    log.on_epoch_end(0)
    log.on_train_end()
    [path] = tmp_path.glob("events.out.tfevents.*")
    images = [v for r in tf.data.TFRecordDataset(str(path)) for v in event_pb2.Event.FromString(r.numpy()).summary.value]
    [value] = images
    picture = tf.io.decode_png(value.tensor.string_val[2]).numpy()      # [width, height, png]
    assert picture.shape[:2] == (8, 24)                                  # the three images side by side
    np.testing.assert_allclose(picture[..., 0] / 255.0, np.concatenate(list(fixed[..., 0]), axis=1), atol=1 / 255)


def test_no_logs_without_the_switch(tmp_path):
    training.train_vqvae(*datasets(blobs(n=16)), VQVAEConfig(epochs=1, **TINY), 32, tmp_path, verbose=0)
    assert not (tmp_path / "logs").exists()
