"""Corruptions computed for a whole batch at once give the same pixels as the reference image-by-image
path (compared bit for bit in the same run, so on any machine and any scipy that runs them)."""
import numpy as np
import pytest

from tent import corruptions, mnistc


def digits_like(n: int) -> np.ndarray:
    """n uint8 (32, 32, 3) images: random strokes on black, as MNIST-C's padded digits."""
    rng = np.random.RandomState(0)
    grey = np.where(rng.rand(n, 32, 32) < 0.2, rng.randint(0, 256, (n, 32, 32)), 0).astype(np.uint8)
    grey[:, :2] = grey[:, -2:] = grey[:, :, :2] = grey[:, :, -2:] = 0  # the 2-pixel zero border
    return np.repeat(grey[..., None], 3, axis=-1)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_zoom_blur_batch_equals_the_image_by_image_path(severity):
    images = digits_like(7)
    c = corruptions.CIFAR_PARAMS["zoom_blur"][severity - 1]
    reference = np.stack([corruptions.zoom_blur(image, c) for image in images])
    batch = corruptions.zoom_blur_batch(images, c, chunk=3)  # chunks of 3, 3 and 1 images
    assert batch.dtype == reference.dtype and np.array_equal(batch, reference)  # every float bit
    expected = np.stack([corruptions.corrupt(image, "zoom_blur", severity, seed=0) for image in images])
    assert np.array_equal(mnistc.corrupt_images(images, "zoom_blur", severity, seed=0), expected)

