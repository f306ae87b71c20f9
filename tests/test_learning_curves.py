"""The learning-curve plot: bands inside what mIoU can be (the seeds' range), and training images seen as an x axis."""

import numpy as np
from PIL import Image

from segsweep.sweep.plots import learning_curves, seed_band

SPREAD = [[(1, 0.30, 32), (2, 0.90, 64)], [(1, 0.10, 32), (2, 0.99, 64)], [(1, 0.50, 32), (2, 1.00, 64)]]


def test_the_band_is_the_seeds_range_and_never_leaves_zero_to_one():
    band = seed_band(SPREAD)
    # a 95% t band of the mean of these 3 seeds would be about [0.83, 1.10] at epoch 2
    np.testing.assert_allclose(band.mean, [0.3, (0.9 + 0.99 + 1.0) / 3])
    np.testing.assert_allclose(band.low, [0.1, 0.9])
    np.testing.assert_allclose(band.high, [0.5, 1.0])
    np.testing.assert_array_equal(band.epochs, [1, 2])
    np.testing.assert_array_equal(band.images, [32, 64])


def test_nan_epochs_are_left_out_and_a_group_without_values_has_no_band():
    band = seed_band([[(1, float("nan"), 8), (2, 0.5, 16)], [(1, 0.2, 8), (2, 0.7, 16)]])
    np.testing.assert_allclose(band.low, [0.2, 0.5])
    assert seed_band([[(1, float("nan"), None)]]) is None


def test_images_seen_get_their_own_panel_only_when_every_run_counted_them(tmp_path):
    learning_curves({"loss=dice": SPREAD}, tmp_path / "counted.png", threshold=0.9)
    uncounted = {"loss=dice": [[(epoch, value, None) for epoch, value, _ in run] for run in SPREAD]}
    learning_curves(uncounted, tmp_path / "uncounted.png")
    wide, narrow = (Image.open(tmp_path / f"{name}.png").size[0] for name in ("counted", "uncounted"))
    assert wide > 1.5 * narrow  # two panels, epochs and images seen, against one
