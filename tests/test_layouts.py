"""Public datasets in their own layouts (data=cityscapes|ade20k|voc|camvid|nnunet), k-fold splits, and their bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segsweep.data.folder import FolderDataModule
from segsweep.data.folder_classes import FolderDataError
from segsweep.data.public_classes import ADE20K_NAMES, CAMVID_NAMES, CITYSCAPES_NAMES, VOC_NAMES
from segsweep.export_scenes import export
from segsweep.sweep.summary import summarize
from segsweep.sweep.tables import markdown

from .helpers import public_datasets
from .helpers.commands import run_module
from .helpers.end_to_end import train_eval_predict
from .helpers.outputs import fake_job, read_metrics

TINY = ("model.base_channels=8", "model.depth=2", "data.crop_size=64", "data.batch_size=4", "trainer.max_epochs=1")
QUIET = ("trainer.enable_model_summary=false", "callbacks.prediction_images.every_n_epochs=1", "data.num_workers=0")
NAMES = {
    "cityscapes": list(CITYSCAPES_NAMES),
    "ade20k": list(ADE20K_NAMES),
    "voc": list(VOC_NAMES),
    "camvid": list(CAMVID_NAMES),
    "nnunet": ["background", "tumour", "edema"],
}


def module(root: Path, layout: str, tmp_path: Path, **keys) -> FolderDataModule:
    return FolderDataModule(str(root), layout=layout, cache_dir=str(tmp_path / "cache"), num_workers=0, **keys)


def scored_test_pixels(datamodule: FolderDataModule) -> int:
    datamodule.setup("test")
    test = datamodule.splits["test"]
    return sum(int((test[index][1] != 255).sum()) for index in range(len(test)))


@pytest.mark.parametrize("layout", ["cityscapes", "ade20k", "voc", "camvid"])
def test_a_layout_pairs_maps_and_tests_on_its_labelled_split(layout, tmp_path):
    root, scored = getattr(public_datasets, layout)(tmp_path)
    before = sorted(path.relative_to(root) for path in root.rglob("*"))
    datamodule = module(root, layout, tmp_path)
    assert list(datamodule.class_names) == NAMES[layout]
    assert datamodule.split_sizes["train"] == 6 and datamodule.split_sizes["val"] == 2
    assert scored_test_pixels(datamodule) == scored  # void values never scored; Cityscapes' placeholder test never read
    present = {
        "cityscapes": ["road", "sky", "car"],
        "ade20k": ["sky", "road", "flag"],
        "voc": ["background", "car", "person"],
        "camvid": ["sky", "road", "car"],
    }[layout]
    counts = datamodule.class_pixel_counts
    assert sorted(datamodule.class_names[i] for i in counts.nonzero().flatten().tolist()) == sorted(present)
    assert sorted(path.relative_to(root) for path in root.rglob("*")) == before  # nothing written into data.root


def test_cityscapes_prefers_train_ids_and_a_classes_yaml_wins(tmp_path, caplog):
    root, scored = public_datasets.cityscapes(tmp_path, train_ids=True)
    with caplog.at_level("INFO"):
        datamodule = module(root, "cityscapes", tmp_path)
        assert scored_test_pixels(datamodule) == scored
    assert all(pair.mask.name.endswith("_gtFine_labelTrainIds.png") for pair in datamodule.pairs["train"])
    assert "test stage uses the val split" in caplog.text
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": [f"c{i}" for i in range(19)]}))
    assert module(root, "cityscapes", tmp_path).class_names[:2] == ("c0", "c1")


def test_voc_sbd_trains_on_trainaug(tmp_path):
    root, _ = public_datasets.voc(tmp_path, sbd=True)
    datamodule = module(root, "voc", tmp_path, sbd=True)
    assert datamodule.split_sizes["train"] == 10 and datamodule.pairs["train"][0].mask.parent.name == "SegmentationClassAug"
    assert "bus" not in [datamodule.class_names[i] for i in datamodule.class_pixel_counts.nonzero().flatten().tolist()]


def test_nnunet_stacks_channels_and_validates_on_a_fold(tmp_path):
    root, _ = public_datasets.nnunet(tmp_path, channels=3)
    datamodule = module(root, "nnunet", tmp_path, folds=5, fold=1)
    assert datamodule.class_names == ("background", "tumour", "edema")
    assert datamodule.split_sizes == {"train": 8, "val": 2, "test": 2}
    datamodule.setup("fit")
    image, _ = datamodule.splits["val"].load(0)
    assert image.shape == (3, 32, 48) and not bool((image[0] == image[1]).all())  # three files, three channels


def test_folds_partition_the_training_cases_the_same_for_every_seed(tmp_path):
    root, _ = public_datasets.camvid(tmp_path)
    vals = []
    for fold in range(3):
        datamodule = module(root, "camvid", tmp_path, folds=3, fold=fold, order_seed=fold + 7)
        vals.append({pair.name for pair in datamodule.pairs["val"]})
        assert {pair.name for pair in datamodule.pairs["test"]} == {f"test/0001TP_{6690 + 30 * i:06d}.png" for i in (0, 1)}
    train = module(root, "camvid", tmp_path).pairs["train"]
    assert sorted(name for val in vals for name in val) == sorted(pair.name for pair in train)
    again = module(root, "camvid", tmp_path, folds=3, fold=0, order_seed=99)
    assert {pair.name for pair in again.pairs["val"]} == vals[0]


def _break(tmp_path: Path, case: str) -> tuple[Path, str, dict]:
    """A replica broken as ``case`` says: (data.root, layout, extra keys)."""
    if case == "not_cityscapes":
        (tmp_path / "elsewhere").mkdir()
        return tmp_path / "elsewhere", "cityscapes", {}
    if case == "image_without_mask":
        root, _ = public_datasets.cityscapes(tmp_path)
        next((root / "gtFine" / "train" / "aachen").glob("*_labelIds.png")).unlink()
        return root, "cityscapes", {}
    if case == "voc_list_names_missing":
        root, _ = public_datasets.voc(tmp_path)
        (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2008_000000\n2011_999999\n")
        return root, "voc", {}
    if case == "foreign_mask_values":
        root, _ = public_datasets.camvid(tmp_path)
        mask = root / "trainannot" / "0001TP_006690.png"
        Image.fromarray(np.full((32, 48), 40, np.uint8), mode="L").save(mask)
        return root, "camvid", {}
    if case == "fold_out_of_range":
        root, _ = public_datasets.camvid(tmp_path)
        return root, "camvid", {"folds": 3, "fold": 3}
    if case == "sbd_absent":
        root, _ = public_datasets.voc(tmp_path)
        return root, "voc", {"sbd": True}
    assert case == "nnunet_without_json"
    root, _ = public_datasets.nnunet(tmp_path)
    (root / "dataset.json").unlink()
    return root, "nnunet", {"folds": 5}


BAD = {
    "not_cityscapes": "no leftImg8bit/train under",
    "image_without_mask": "image without its mask (expected",
    "voc_list_names_missing": "val.txt:2: lists 2011_999999, but",
    "foreign_mask_values": "mask values 40 are not this dataset's label values (0..11)",
    "fold_out_of_range": "data.fold=3 is out of range: data.folds=3 has folds 0..2",
    "sbd_absent": "data.sbd=true: no",
    "nnunet_without_json": "no dataset.json under",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_what_was_expected(tmp_path, case):
    root, layout, keys = _break(tmp_path, case)
    with pytest.raises((FolderDataError, ValueError)) as raised:
        module(root, layout, tmp_path, **keys).setup("fit")
    message = str(raised.value)
    assert BAD[case] in message and "\n" not in message


def test_a_bad_root_fails_the_command_in_one_line(tmp_path):
    result = run_module(
        "segsweep.train", "data=cityscapes", f"data.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", check=False
    )
    expected = f"no leftImg8bit/train under {tmp_path}: is data.root the folder that holds leftImg8bit/ and gtFine/?"
    assert result.returncode == 1 and expected in result.stderr + result.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["cityscapes", "ade20k", "voc", "camvid", "nnunet"])
def test_a_layout_trains_evaluates_and_predicts(layout, tmp_path):
    root, scored = getattr(public_datasets, layout)(tmp_path)
    # one job of the dataset's GPU loss study (experiment=loss_comparison_<layout>: data=<layout>), on the CPU at tiny size
    study = (f"experiment=loss_comparison_{layout}", "hydra.mode=RUN", "trainer.accelerator=cpu", "trainer.precision=32-true")
    common = (*study, f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}")
    inputs = {"nnunet": root / "imagesTs", "camvid": root / "test", "voc": root / "JPEGImages"}
    source = inputs.get(layout, next(root.glob("images/validation"), root / "leftImg8bit" / "test" / "berlin"))
    # eval counts only the scored pixels of the split that tests (nnU-Net: a fold, no void)
    train_eval_predict(tmp_path, (*common, *TINY, *QUIET), NAMES[layout], scored or 2 * 32 * 48, source, (48, 32))


def test_a_report_pools_folds_and_pairs_by_seed_and_fold(tmp_path):
    # replicates far apart, the same +0.05 for dice in each (seed, fold): paired by both, the difference has no spread
    for seed in (1, 2):
        for fold in (0, 1, 2):
            base = 0.3 + 0.1 * seed + 0.03 * fold
            for loss, miou in (("ce", base), ("dice", base + 0.05)):
                overrides = [f"loss={loss}", f"seed={seed}", f"data.fold={fold}"]
                fake_job(tmp_path / f"loss={loss},seed={seed},data.fold={fold}", overrides, miou, [miou])
    report = summarize(tmp_path)
    assert report.swept == ["loss"] and [group.label for group in report.groups] == ["loss=dice", "loss=ce"]
    runner_up = report.groups[1]
    assert runner_up.diff is not None and runner_up.diff.seeds == 6
    assert runner_up.diff.mean == pytest.approx(-0.05) and runner_up.diff.seed_sd == pytest.approx(0.0, abs=1e-9)
    assert "6/6 (2 seeds x 3 folds)" in markdown(report)


@pytest.mark.slow
def test_a_fold_sweep_on_a_folder_dataset_gives_one_report(tmp_path):
    root = export(tmp_path / "exported", {"train": 9, "val": 2, "test": 3}, 32, seed=0)
    sweep_dir = tmp_path / "sweep"
    run_module(
        "segsweep.train",
        "-m",
        "data=folder",
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.folds=3",
        "data.fold=0,1,2",
        *TINY,
        *QUIET,
        f"hydra.sweep.dir={sweep_dir}",
    )
    text = (sweep_dir / "report.md").read_text()
    assert "3/3 (1 seed x 3 folds)" in text
    records = [read_metrics(job) for job in sorted(sweep_dir.glob("*fold=*"))]
    assert sorted(record["config"]["data"]["fold"] for record in records) == [0, 1, 2]
