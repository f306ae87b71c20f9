import importlib.util
from pathlib import Path

import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference as monai_sliding_window_inference
from torch import nn

from segsweep.inference import importance_map, sliding_window_argmax, sliding_window_inference, tile_starts

TOL = 1e-4


def conv_model(in_channels: int = 3, num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(8, num_classes, 1),
    ).eval()


def pointwise(tiles: torch.Tensor) -> torch.Tensor:
    """Position-independent nonlinear predictor with 4 output channels."""
    return torch.cat([tiles.tanh(), tiles.sum(dim=1, keepdim=True) ** 2], dim=1)


def monai_reference(images, predictor, roi, overlap, mode, tile_batch):
    return monai_sliding_window_inference(images, roi, tile_batch, predictor, overlap=overlap, mode=mode, sigma_scale=0.125)


CASES = [
    # shape, roi, overlap, mode, tile_batch
    ((2, 3, 100, 77), 32, 0.25, "gaussian", 4),  # not multiples of the roi, several images
    ((1, 3, 96, 96), 32, 0.5, "gaussian", 3),  # exact multiple
    ((1, 3, 70, 53), (24, 40), 0.3, "gaussian", 5),  # rectangular roi, truncated stride
    ((2, 3, 20, 50), 32, 0.25, "gaussian", 4),  # smaller than the roi along one axis
    ((1, 3, 11, 14), 16, 0.25, "gaussian", 2),  # smaller than the roi along both axes
    ((2, 3, 90, 61), 32, 0.25, "constant", 4),
    ((1, 3, 9, 40), 16, 0.0, "constant", 1),
    ((1, 3, 65, 65), 64, 0.9, "gaussian", 8),  # tiny stride
]


@pytest.mark.parametrize(("shape", "roi", "overlap", "mode", "tile_batch"), CASES)
@pytest.mark.parametrize("predictor_name", ["pointwise", "conv_model"])
def test_matches_monai(shape, roi, overlap, mode, tile_batch, predictor_name):
    predictor = pointwise if predictor_name == "pointwise" else conv_model()
    images = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = sliding_window_inference(images, predictor, roi, overlap=overlap, mode=mode, tile_batch=tile_batch)
        ref = monai_reference(images, predictor, roi, overlap, mode, tile_batch)
    assert ours.shape == ref.shape
    assert ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= TOL


def test_single_tile_equals_direct_prediction():
    model = conv_model()
    images = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        direct = model(images)
        tiled = sliding_window_inference(images, model, (48, 40), overlap=0.25, mode="gaussian")
    assert torch.equal(tiled.argmax(dim=1), direct.argmax(dim=1))
    torch.testing.assert_close(tiled, direct, rtol=1e-5, atol=1e-6)


def test_tile_batch_does_not_change_result():
    model = conv_model()
    images = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        one = sliding_window_inference(images, model, 32, tile_batch=1)
        many = sliding_window_inference(images, model, 32, tile_batch=7)
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-5)


def test_constant_mode_averages_overlapping_tiles():
    # Predictor returns each tile's own top-left pixel value, so overlapping tiles disagree.
    images = torch.arange(12.0).view(1, 1, 3, 4)
    out = sliding_window_inference(images, lambda t: t[:, :, :1, :1].expand_as(t), (3, 2), overlap=0.5, mode="constant")
    # Tiles start at columns 0, 1, 2; columns 1 and 2 are shared by two tiles.
    assert out[0, 0, 0].tolist() == [0.0, 0.5, 1.5, 2.0]


def test_tile_starts_last_tile_flush_with_border():
    assert tile_starts(100, 32, 0.25) == [0, 24, 48, 68]
    assert tile_starts(96, 32, 0.0) == [0, 32, 64]
    assert tile_starts(32, 32, 0.5) == [0]
    assert tile_starts(20, 32, 0.5) == [0]
    assert tile_starts(40, 32, 0.99) == list(range(9))  # stride never drops below 1


@pytest.mark.parametrize("roi", [(64, 64), (31, 20), (1, 7)])
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_importance_map_matches_monai(roi, mode):
    ours = importance_map(roi, mode, sigma_scale=0.125)
    ref = compute_importance_map(roi, mode=mode, sigma_scale=0.125)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)


def test_runs_on_the_input_device():
    # The meta device stands in for an accelerator: any tensor created on the CPU would fail to mix with it.
    model = conv_model().to("meta")
    images = torch.empty(2, 3, 50, 70, device="meta")
    out = sliding_window_inference(images, model, 32, tile_batch=3)
    assert out.device.type == "meta"
    assert out.shape == (2, 5, 50, 70)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = conv_model()
    images = torch.randn(1, 3, 80, 90)
    with torch.no_grad():
        cpu = sliding_window_inference(images, model, 32)
        gpu = sliding_window_inference(images.cuda(), model.cuda(), 32)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_progress_bar_does_not_change_result():
    images = torch.randn(1, 3, 40, 40)
    quiet = sliding_window_inference(images, pointwise, 16)
    shown = sliding_window_inference(images, pointwise, 16, progress=True)
    assert torch.equal(quiet, shown)


def test_gradients_flow_when_enabled():
    model = conv_model()
    images = torch.randn(1, 3, 40, 40)
    sliding_window_inference(images, model, 16).sum().backward()
    assert model[0].weight.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"overlap": 1.0}, "overlap"), ({"tile_batch": 0}, "tile_batch"), ({"mode": "linear"}, "mode")],
)
def test_invalid_arguments_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sliding_window_inference(torch.randn(1, 3, 20, 20), pointwise, 16, **kwargs)


def test_predictor_changing_tile_size_rejected():
    with pytest.raises(ValueError, match="predictor must return"):
        sliding_window_inference(torch.randn(1, 3, 20, 20), lambda t: t[..., ::2, ::2], 16)


def test_benchmark_script_smoke():
    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_sliding_window.py"
    spec = importlib.util.spec_from_file_location("bench_sliding_window", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(size=96, roi=32, overlap=0.25, tile_batch=4, repeats=1)
    assert result["max_abs_diff"] <= TOL
    assert result["ours_s"] > 0 and result["monai_s"] > 0


# ---------------------------------------------------------------- bounded memory: argmax in stripes, uint8 tiles


@pytest.mark.parametrize(("shape", "roi", "overlap", "mode", "tile_batch"), CASES)
@pytest.mark.parametrize("predictor_name", ["pointwise", "conv_model"])
def test_the_bounded_path_gives_the_full_paths_argmax(shape, roi, overlap, mode, tile_batch, predictor_name):
    predictor = pointwise if predictor_name == "pointwise" else conv_model()
    images = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = sliding_window_inference(images, predictor, roi, overlap=overlap, mode=mode, tile_batch=tile_batch)
        bounded = sliding_window_argmax(images, predictor, roi, overlap=overlap, mode=mode, tile_batch=tile_batch)
    assert bounded.dtype == torch.uint8 and bounded.shape == full.shape[:1] + full.shape[2:]
    assert torch.equal(bounded.long(), full.argmax(dim=1))


def test_the_bounded_path_takes_uint8_images_and_converts_tiles():
    model = conv_model()
    images = torch.randint(0, 256, (1, 3, 150, 97), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    seen: list[torch.dtype] = []

    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        seen.append(tiles.dtype)
        return model(tiles.float() / 255)

    with torch.no_grad():
        full = sliding_window_inference(images.float() / 255, model, 32, tile_batch=5)
        bounded = sliding_window_argmax(images, predictor, 32, tile_batch=5)
    assert set(seen) == {torch.uint8}
    assert torch.equal(bounded.long(), full.argmax(dim=1))


def test_more_than_256_classes_give_int64_indices():
    images = torch.randn(1, 3, 40, 40)
    logits = torch.randn(1, 300, 40, 40)
    bounded = sliding_window_argmax(images, lambda tiles: logits[:, :, :16, :16].expand(len(tiles), -1, -1, -1), 16)
    assert bounded.dtype == torch.int64 and int(bounded.max()) < 300
