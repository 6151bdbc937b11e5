"""The one image preprocessing path: uploads -> MNIST-style 28x28 -> network input."""
from __future__ import annotations

import numpy as np


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 images (white digit on black, 0..255) -> float32 in [0, 1], the networks' input."""
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)
