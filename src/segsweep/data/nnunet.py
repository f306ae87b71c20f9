"""An nnU-Net v2 raw dataset: dataset.json's labels and channels, and the imagesTr/labelsTr training cases.

``dataset.json`` (labels, channel_names, file_ending), ``imagesTr/<case>_0000<ending>`` (more channels as ``_0001``,
...), ``labelsTr/<case><ending>``; ``imagesTs/`` (no labels) is what predict segments.

2D images only, in lossless formats; one channel (greyscale), one RGB file, or three single-channel files stacked as
the network's three input channels. There is no val split: validation is a fold of the training cases (data.folds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segsweep.data.folder_classes import FolderClasses, FolderDataError, preset_classes
from segsweep.data.folder_files import Pair

DATASET_FILE = "dataset.json"
ENDINGS = (".png", ".bmp", ".tif", ".tiff")
IGNORE_LABEL = "ignore"  # nnU-Net v2's name of the label that is never scored


def _dataset_json(root: Path) -> dict[str, Any]:
    path = root / DATASET_FILE
    if not path.is_file():
        raise FolderDataError(
            f"no {DATASET_FILE} under {root}: is data.root an nnU-Net raw dataset (DatasetXXX_Name with dataset.json, "
            "imagesTr/, labelsTr/)?"
        )
    try:
        content = json.loads(path.read_text())
    except ValueError as error:
        raise FolderDataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise FolderDataError(f"{path}: expected an object with labels, channel_names and file_ending")
    for key in ("labels", "channel_names", "file_ending"):
        if key not in content:
            raise FolderDataError(f"{path}: missing `{key}` (nnU-Net v2 dataset.json)")
    return content


def _classes(labels: Any, path: Path) -> tuple[list[str], dict[int, int]]:
    """dataset.json's labels (name -> value) as class names in value order and a mapping raw value -> class."""
    if not isinstance(labels, dict) or not labels:
        raise FolderDataError(f"{path}: `labels` must map each label name to its integer value, got {labels!r}")
    by_value: dict[int, str] = {}
    for name, value in labels.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 255:
            raise FolderDataError(f"{path}: labels.{name} = {value!r}: segsweep reads integer label values 0..254 (not regions)")
        if value in by_value:
            raise FolderDataError(f"{path}: labels {by_value[value]!r} and {name!r} share the value {value}")
        by_value[value] = str(name)
    names = [by_value[value] for value in sorted(by_value) if by_value[value] != IGNORE_LABEL]
    mapping = {value: names.index(name) for value, name in by_value.items() if name != IGNORE_LABEL}
    mapping.update({value: 255 for value, name in by_value.items() if name == IGNORE_LABEL})
    return names, mapping


def read(root: Path) -> tuple[FolderClasses, list[Pair], list[str]]:
    """The dataset's classes, its training cases (sorted), and the lines to log."""
    content = _dataset_json(root)
    path = root / DATASET_FILE
    ending = str(content["file_ending"])
    if ending.lower() not in ENDINGS:
        raise FolderDataError(
            f"{path}: file_ending {ending!r}: segsweep reads 2D images in lossless formats ({', '.join(ENDINGS)})"
        )
    channels = content["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise FolderDataError(f"{path}: `channel_names` must map channel indices to names, got {channels!r}")
    names, mapping = _classes(content["labels"], path)
    images, labels = root / "imagesTr", root / "labelsTr"
    for folder in (images, labels):
        if not folder.is_dir():
            raise FolderDataError(f"no {folder.name} under {root}: an nnU-Net raw dataset holds imagesTr/ and labelsTr/")
    cases = sorted(
        item.name.removesuffix(ending)[: -len("_0000")] for item in images.iterdir() if item.name.endswith(f"_0000{ending}")
    )
    if not cases:
        raise FolderDataError(f"{images}: no <case>_0000{ending} images")
    pairs = [_case(root, case, ending, len(channels)) for case in cases]
    notes = [f"{root}: nnU-Net dataset, {len(pairs)} training cases, {len(channels)} channel(s), labels {', '.join(names)}"]
    return preset_classes(f"nnunet {root.name}", names, None, mapping), pairs, notes


def _case(root: Path, case: str, ending: str, channels: int) -> Pair:
    """One training case: its channel files (one RGB file, or ``channels`` files stacked) and its label file."""
    files = [root / "imagesTr" / f"{case}_{index:04d}{ending}" for index in range(channels)]
    label = root / "labelsTr" / f"{case}{ending}"
    if not label.is_file():
        raise FolderDataError(f"{files[0]}: image without its mask (expected {label})")
    present = [path for path in files if path.is_file()]
    if len(present) == 1 and channels in (1, 3):  # one greyscale file, or an RGB PNG holding the three channels
        return Pair(files[0], label, str(files[0].relative_to(root)))
    if len(present) != channels or channels != 3:
        missing = next((path for path in files if not path.is_file()), None)
        if missing is not None:
            raise FolderDataError(f"{missing}: missing; dataset.json names {channels} channels")
        raise FolderDataError(
            f"{root / DATASET_FILE}: {channels} channels; segsweep's networks take 1 or 3 (one file each, stacked)"
        )
    return Pair(files[0], label, str(files[0].relative_to(root)), tuple(files[1:]))
