import math

import pytest
import torch

from segsweep.models.class_weights import STRATEGIES, compute_class_weights

# N = 100 pixels, f = [0.7, 0.2, 0.1]; expected values worked out by hand, then scaled to mean 1.
COUNTS = torch.tensor([70, 20, 10])
HAND_COMPUTED = {
    # N/(C n_c) is proportional to 1/f = [10/7, 5, 10], sum 115/7 -> [6/23, 21/23, 42/23]
    "inverse": [6 / 23, 21 / 23, 42 / 23],
    # median(f)/f = 0.2/f = [2/7, 1, 2]: proportional to 1/f, so identical after normalisation
    "median": [6 / 23, 21 / 23, 42 / 23],
    # 1/sqrt(f) = [1.195229, 2.236068, 3.162278], mean 2.197858
    "inverse_sqrt": [0.543815, 1.017385, 1.438800],
    # 1/ln(1.72), 1/ln(1.22), 1/ln(1.12) = [1.843915, 5.028895, 8.823891], mean 5.232234
    "enet": [0.352415, 0.961137, 1.686448],
    # default beta = (N-1)/N = 0.99: 0.01/(1 - 0.99^n) = [0.019796, 0.054917, 0.104583], mean 0.059765
    "effective": [0.331224, 0.918879, 1.749897],
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_matches_hand_computed_weights(strategy):
    weights = compute_class_weights(strategy, COUNTS)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor(HAND_COMPUTED[strategy]), rtol=0, atol=1e-5)


def test_effective_with_explicit_beta():
    # 0.1/(1 - 0.9^n) = [0.100063, 0.113840, 0.153534], mean 0.122479
    weights = compute_class_weights("effective", COUNTS, beta=0.9)
    torch.testing.assert_close(weights, torch.tensor([0.816978, 0.929468, 1.253554]), rtol=0, atol=1e-5)


def test_effective_default_beta_is_stable_for_large_counts():
    # beta = 1 - 1/N with N = 4e9: weights ~ 1/(1 - exp(-f)), f = [0.75, 0.25]; naive beta**n loses this.
    weights = compute_class_weights("effective", torch.tensor([3_000_000_000, 1_000_000_000]))
    expected_ratio = (1 - math.exp(-0.75)) / (1 - math.exp(-0.25))
    assert weights[1] / weights[0] == pytest.approx(expected_ratio, rel=1e-5)


@pytest.mark.parametrize("values", [[1, 2, 3], (0.5, 1.0, 1.5), [2.0, 4.0, 6.0]])
def test_explicit_weights_are_normalised(values):
    torch.testing.assert_close(compute_class_weights(values, COUNTS), torch.tensor([0.5, 1.0, 1.5]))


@pytest.mark.parametrize("strategy", [*STRATEGIES, [3.0, 0.0, 1.0, 7.0, 2.0]])
def test_weights_have_mean_one(strategy):
    counts = torch.tensor([5_000_000_000, 1_234_567, 89, 42_000, 1])
    weights = compute_class_weights(strategy, counts)
    assert weights.shape == (5,)
    assert torch.isfinite(weights).all()
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_class_without_pixels_gets_max_of_present_classes(strategy):
    weights = compute_class_weights(strategy, torch.tensor([70, 30, 0]))
    assert torch.isfinite(weights).all()
    assert weights[2] == weights[:2].max()


def test_class_without_pixels_hand_computed():
    # 1/f = [10/7, 10/3] and the empty class takes 10/3; mean 170/63 -> [9/17, 21/17, 21/17]
    weights = compute_class_weights("inverse", torch.tensor([70, 30, 0]))
    torch.testing.assert_close(weights, torch.tensor([9, 21, 21]) / 17)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"strategy": "foo"},
            r"^loss\.class_weights: unknown strategy 'foo' "
            r"\(choose from inverse, inverse_sqrt, median, enet, effective, or a list of 3 numbers\)$",
        ),
        ({"strategy": [1.0, 2.0]}, r"^loss\.class_weights: got 2 weights but the dataset has 3 classes$"),
        ({"strategy": [1.0, -2.0, 3.0]}, r"^loss\.class_weights: weights must be finite and non-negative"),
        ({"strategy": [1.0, float("nan"), 3.0]}, r"^loss\.class_weights: weights must be finite and non-negative"),
        ({"strategy": [1.0, "a", 3.0]}, r"^loss\.class_weights: expected a strategy name or a list of numbers"),
        ({"strategy": [0, 0, 0]}, r"^loss\.class_weights: weights are all zero$"),
        ({"strategy": "inverse", "beta": 0.9}, r"^loss\.class_weights: beta only applies to the 'effective'"),
        ({"strategy": "effective", "beta": 1.0}, r"^loss\.class_weights: beta must be in \[0, 1\)"),
        ({"strategy": "inverse", "pixel_counts": torch.zeros(3)}, r"^loss\.class_weights: pixel_counts are all zero"),
        ({"strategy": "inverse", "pixel_counts": torch.tensor([1, -1])}, r"pixel_counts must be finite and non-neg"),
    ],
)
def test_errors_name_the_key(kwargs, message):
    kwargs = {"pixel_counts": COUNTS, **kwargs}
    with pytest.raises(ValueError, match=message):
        compute_class_weights(**kwargs)


def test_error_uses_given_key():
    with pytest.raises(ValueError, match=r"^data\.weights: got 4 weights but the dataset has 3 classes$"):
        compute_class_weights([1, 1, 1, 1], COUNTS, key="data.weights")


def test_median_frequency_counts_only_the_images_that_contain_the_class():
    # f = n_c / pixels of images with c = [70/100, 20/100, 10/50] = [0.7, 0.2, 0.2]; median 0.2
    # weights 0.2/f = [2/7, 1, 1], mean 16/21 -> [3/8, 21/16, 21/16]
    weights = compute_class_weights("median", torch.tensor([70, 20, 10]), image_pixel_counts=torch.tensor([100, 100, 50]))
    assert torch.allclose(weights, torch.tensor([3 / 8, 21 / 16, 21 / 16]))


def test_median_with_half_the_classes_absent_uses_the_median_of_present_classes() -> None:
    """Eigen & Fergus: the median runs over the classes present; absent ones get the rarest present weight."""
    weights = compute_class_weights("median", torch.tensor([10.0, 0.0, 0.0, 5.0]))
    expected = torch.tensor([7.5 / 10, 7.5 / 5, 7.5 / 5, 7.5 / 5], dtype=torch.float64)
    torch.testing.assert_close(weights, (expected / expected.mean()).float())
