import pytest
import torch

from segsweep.models.nets.unet import UNet


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("up_mode", ["transpose", "bilinear"])
def test_logits_have_the_input_size(depth, up_mode):
    net = UNet(num_classes=5, base_channels=4, depth=depth, up_mode=up_mode).eval()
    for height, width in [(32, 32), (48, 80)]:
        assert net(torch.randn(2, 3, height, width)).shape == (2, 5, height, width)


@pytest.mark.parametrize("size", [(33, 47), (17, 64), (70, 31)])
def test_sizes_that_are_not_multiples_of_the_pooling_are_padded_and_cropped(size):
    net = UNet(base_channels=4, depth=3).eval()
    images = torch.randn(1, 3, *size)
    logits = net(images)
    assert logits.shape == (1, 4, *size)
    logits.sum().backward()
    assert all(parameter.grad is not None for parameter in net.parameters())


def test_the_notebook_unet_shape():
    net = UNet(in_channels=3, num_classes=4, base_channels=32, depth=3)
    assert net(torch.randn(1, 3, 128, 128)).shape == (1, 4, 128, 128)
    assert [encoder[0].out_channels for encoder in net.encoders] == [32, 64, 128, 256]


def test_without_batch_norm():
    net = UNet(base_channels=4, depth=2, batch_norm=False)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in net.modules())
    assert net(torch.randn(1, 3, 16, 16)).shape == (1, 4, 16, 16)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"depth": 0}, "model.depth"), ({"base_channels": 0}, "model.base_channels"), ({"up_mode": "nearest"}, "model.up_mode")],
)
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        UNet(**kwargs)
