"""The datamodule contract: what every datamodule offers the code downstream of it (a ``typing.Protocol``).

Downstream of the datamodule nothing knows which dataset it is (the scenes of ``data/scenes_datamodule.py``, a folder
of ``data/folder.py``, the layouts to come): building the module and its class weights (``app/build.py``), validation
(``app/validation.py``) and the callbacks (``runs/callbacks/``) read only what is written here. A new dataset layout
is a LightningDataModule with these members; ``tests/test_datamodule.py`` checks that both datamodules have them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor
from torch.utils.data import DataLoader

from segsweep.data.classes import DatasetClasses


@runtime_checkable
class SegmentationData(Protocol):
    """A LightningDataModule of (image, mask) splits ``train``, ``val`` and ``test``, and what the run needs to know of them.

    The ``class_*`` statistics describe the train split; reading them may set it up (generate or scan it).
    """

    # names, colours and ignore index: all that the module, the metrics and the records know of the dataset
    classes: DatasetClasses
    # the training images' side in pixels (a folder's crops): the model summary's input, predict's tiles
    image_size: int
    # True: the dataset's own classes decide model.num_classes (a folder's classes.yaml), and validation sets it
    classes_from_data: bool

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def split_sizes(self) -> dict[str, int]:
        """Images in each split: ``{"train": n, "val": n, "test": n}``."""
        ...

    @property
    def inference_roi(self) -> int | None:
        """Validation and test by sliding windows of this size (whole images of any size); None: images as they come."""
        ...

    @property
    def class_pixel_counts(self) -> Tensor:
        """long [classes]: pixels of each class in the train split (class-weighted losses, the report's rarest class)."""
        ...

    @property
    def class_presence(self) -> Tensor:
        """bool [train images, classes]: whether each class occurs in each train image (repeat-factor sampling)."""
        ...

    @property
    def class_image_pixels(self) -> Tensor:
        """long [classes]: the pixels of the train images that contain each class (median-frequency balancing)."""
        ...

    @property
    def class_frequencies(self) -> Tensor:
        """double [classes]: each class's share of the train split's pixels."""
        ...

    def sample_images(self, split: str, count: int) -> tuple[Tensor, Tensor]:
        """The first ``count`` images (uint8 [N,3,S,S]) and masks (long [N,S,S]) of ``split``, unaugmented."""
        ...

    def whole_images(self, split: str, count: int) -> list[tuple[Tensor, Tensor]]:
        """The first ``count`` images (uint8 [3,H,W]) and masks (long [H,W]) of ``split``, unaugmented, each its own size."""
        ...

    def setup(self, stage: str | None = None) -> None: ...

    def train_dataloader(self) -> DataLoader: ...

    def val_dataloader(self) -> DataLoader: ...

    def test_dataloader(self) -> DataLoader: ...


class DerivedStatistics:
    """The members of the contract that every datamodule derives the same way from its ``classes`` and
    ``class_pixel_counts``: a base class beside ``pl.LightningDataModule``."""

    classes: DatasetClasses

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes.names

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def class_frequencies(self) -> Tensor:
        counts = self.class_pixel_counts.double()  # type: ignore[attr-defined]
        return counts / counts.sum()
