"""Overlays that show the answer: colours that stand out from the image, a legend of the classes drawn, whole images."""

from __future__ import annotations

import numpy as np
import torch

from segsweep.app.predictions import DISPLAY_SIZE
from segsweep.app.sources import every_class_scenes
from segsweep.data.classes import DatasetClasses
from segsweep.data.scenes import SCENE_CLASSES, SceneSpec, generate_scenes
from segsweep.runs.visualize import legend, overlay, present, shrink, with_legend


def _scenes(count: int = 8, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    return generate_scenes(SceneSpec(), 0, "predict", torch.arange(count), size)


def test_overlay_colours_stand_out_from_the_scenes_they_are_drawn_on():
    images, masks = _scenes()
    for colors, low, high in ((SCENE_CLASSES.overlay_colors, 50, 255), (SCENE_CLASSES.colors, 0, 30)):
        # the masks' own palette is what the scenes are drawn in: blended over them it hardly shows
        difference = (overlay(images, masks, colors).float() - images.float()).abs().mean().item()
        assert low < difference < high, (colors, difference)


def test_overlay_colours_are_distinct_for_many_classes_and_fixed_across_datasets():
    many = DatasetClasses.create([f"class{index}" for index in range(150)])
    assert len(set(many.overlay_colors)) == 150
    assert many.overlay_colors[:4] == SCENE_CLASSES.overlay_colors
    assert not set(SCENE_CLASSES.overlay_colors) & set(SCENE_CLASSES.colors)


def test_the_legend_shows_the_classes_present_with_their_colours_under_the_unchanged_image():
    images, masks = _scenes(1)
    colors, names = SCENE_CLASSES.overlay_colors, SCENE_CLASSES.names
    mask = masks[0].clone()
    mask[mask == 3] = 1  # no pedestrian
    shown = present([mask], len(names))
    assert shown == [0, 1, 2]
    drawn = with_legend(images[0], names, colors, shown)
    height, width = images.shape[-2:]
    assert torch.equal(drawn[:, :height, :width], images[0])
    strip = drawn[:, height:].permute(1, 2, 0).reshape(-1, 3)
    swatches = {tuple(pixel) for pixel in strip.tolist()}
    assert {colors[index] for index in shown} <= swatches and colors[3] not in swatches
    assert (strip == 0).all(dim=1).any()  # the names, in black
    assert legend(["a very long class name indeed"], [colors[0]], 20).shape[-1] > 20  # wider than a tiny image


def test_report_grids_show_whole_images_shrunk_to_fit():
    image = torch.randint(0, 256, (3, 1024, 2048), dtype=torch.uint8)
    shrunk = shrink(image, DISPLAY_SIZE)
    assert shrunk.shape == (3, DISPLAY_SIZE // 2, DISPLAY_SIZE) and shrunk.dtype == torch.uint8
    assert abs(shrunk.float().mean().item() - image.float().mean().item()) < 2  # the whole image, averaged down
    small = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    assert torch.equal(shrink(small, DISPLAY_SIZE), small)
    assert np.array_equal(present([torch.tensor([[0, 255], [2, 2]])], 4), [0, 2])


def test_generated_scenes_to_predict_show_every_class(caplog):
    spec = SceneSpec()
    indices = every_class_scenes(spec, 0, 3, (64, 96), 4)
    _, masks = generate_scenes(spec, 0, "predict", torch.tensor(indices), 64, 96)
    assert 0 not in indices  # scene 0 has no pedestrian
    assert all(set(mask.unique().tolist()) == {0, 1, 2, 3} for mask in masks)
    # a class the config never draws: the first scenes fill in, and the log says so
    assert every_class_scenes(SceneSpec(pedestrian_prob=0.0), 0, 2, (32, 32), 4) == [0, 1]
    assert "only 0 of the first 200 scenes show every class" in caplog.text
