import numpy as np
import pytest
import torch

from segsweep.data.scenes import CLASS_NAMES, OBJECT_COLORS, SceneSpec, generate_scenes

SPEC = SceneSpec()


def test_image_depends_only_on_seed_split_index():
    images, masks = generate_scenes(SPEC, 7, "train", torch.arange(12), 48)
    for chunk in (torch.arange(0, 5), torch.arange(5, 12), torch.tensor([11, 3, 8])):
        part_images, part_masks = generate_scenes(SPEC, 7, "train", chunk, 48)
        assert torch.equal(part_images, images[chunk])
        assert torch.equal(part_masks, masks[chunk])


def test_outputs_have_documented_shapes_and_types():
    images, masks = generate_scenes(SPEC, 0, "val", torch.arange(3), 40, 56)
    assert images.shape == (3, 3, 40, 56)
    assert images.dtype == torch.uint8
    assert masks.shape == (3, 40, 56)
    assert masks.dtype == torch.uint8
    assert int(masks.max()) < len(CLASS_NAMES)


def test_splits_and_seeds_give_different_scenes():
    scenes = {
        (seed, split): generate_scenes(SPEC, seed, split, torch.arange(4), 32)[0]
        for seed in (0, 1)
        for split in ("train", "val", "test")
    }
    keys = list(scenes)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not torch.equal(scenes[a], scenes[b]), (a, b)


def test_masks_match_the_drawn_colours():
    spec = SceneSpec(noise_std=0.0, color_jitter=0.0)
    images, masks = generate_scenes(spec, 3, "train", torch.arange(16), 64)
    pixels = images.permute(0, 2, 3, 1)
    for label, color in OBJECT_COLORS.items():
        assert (pixels[masks == label] == torch.tensor(color, dtype=torch.uint8)).all()
    road = pixels[masks == 1]
    assert (road == 100).all()
    sky = pixels[masks == 0]
    assert (sky[:, 2] == 180).all()
    assert (sky[:, 1] == 0).all()
    assert sky[:, 0].min() >= 100
    assert sky[:, 0].max() <= 150


def test_pedestrians_are_a_rare_class_by_default():
    _, masks = generate_scenes(SPEC, 0, "train", torch.arange(512), 64)
    share = torch.bincount(masks.flatten().long(), minlength=4).double() / masks.numel()
    assert 0.01 <= share[3] <= 0.06, share
    assert share[2] > share[3]
    assert share[0] > 0.3
    assert share[1] > 0.3


def test_more_pedestrians_when_asked():
    few = generate_scenes(SceneSpec(pedestrian_prob=0.1), 0, "train", torch.arange(256), 64)[1]
    many = generate_scenes(SceneSpec(pedestrian_prob=0.9), 0, "train", torch.arange(256), 64)[1]
    assert (many == 3).sum() > 3 * (few == 3).sum()


def test_nearer_objects_occlude_farther_ones():
    """Objects are drawn far to near: where boxes overlap, the lower (nearer) object is visible."""
    spec = SceneSpec(min_cars=3, max_cars=3, max_pedestrians=0, noise_std=0, color_jitter=0)
    _, masks = generate_scenes(spec, 0, "train", torch.arange(64), 64)
    # every car pixel's column has road below the lowest car pixel, never sky: cars stand on the road
    rows = torch.arange(64)[None, :, None].expand_as(masks)
    car_rows = torch.where(masks == 2, rows, -1).amax(dim=1)
    assert (car_rows[car_rows >= 0] >= 64 * 0.35).all()


def notebook_scene(size=128):
    """The seed notebook's create_segmentation_scene, as printed there (the reference)."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.int64)
    img[: size // 2, :, 2] = 180
    img[: size // 2, :, 0] = np.linspace(100, 150, size // 2)[:, np.newaxis]
    img[size // 2 :, :, :] = 100
    mask[size // 2 :, :] = 1
    img[size // 2 : 3 * size // 4, size // 4 : 3 * size // 4, :] = [180, 50, 50]
    mask[size // 2 : 3 * size // 4, size // 4 : 3 * size // 4] = 2
    img[size // 2 + 10 : size // 2 + 40, 10:25, :] = [50, 170, 50]
    mask[size // 2 + 10 : size // 2 + 40, 10:25] = 3
    return img, mask


@pytest.mark.parametrize("size", [128, 96])
def test_notebook_layout_reproduces_the_notebook_scene(size):
    ref_image, ref_mask = notebook_scene(size)
    images, masks = generate_scenes(SceneSpec(layout="notebook", noise_std=0.0), 0, "train", torch.arange(2), size)
    assert np.array_equal(masks[0].numpy(), ref_mask)
    assert torch.equal(masks[0], masks[1])
    assert np.array_equal(images[0].permute(1, 2, 0).numpy(), ref_image)
    noisy = generate_scenes(SceneSpec(layout="notebook"), 0, "train", torch.arange(2), size)[0]
    difference = noisy.float() - images.float()
    assert 7 < difference[:, :, 20:60].std() < 13
    assert not torch.equal(noisy[0], noisy[1])


@pytest.mark.parametrize(
    ("key", "value"), [("layout", "city"), ("pedestrian_prob", 1.5), ("horizon", (0.7, 0.2)), ("noise_std", -1.0)]
)
def test_bad_scene_settings_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"data.scene.{key}"):
        SceneSpec(**{key: value})
