"""brainvq_utils: shared code for the brainvq notebooks.

Importing the package registers its custom Keras layers and models, so that
``keras.saving.load_model("vqvae.keras")`` works after ``import brainvq_utils``.
"""

__version__ = "0.1.0"

from . import vqvae  # noqa: E402,F401  (registers the custom layers for load_model)
