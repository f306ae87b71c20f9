"""A bad config fails before any work with one line naming the key."""

from pathlib import Path

import pytest
from omegaconf import open_dict

from segsweep.app.config import CONFIG_DIR
from segsweep.app.typecheck import check_types
from segsweep.app.validation import validate


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=0"], "data.image_size"),
        (["data.batch_size=-2"], "data.batch_size"),
        (["data.train_size=0"], "data.train_size"),
        (["trainer.max_epochs=0"], "trainer.max_epochs"),
        (["threads=0"], "threads must be >= 1"),
        (["model.num_classes=5"], "model.num_classes=5"),
        (["data.image_size=8", "model.depth=4"], "data.image_size=8 is smaller than 2\\*\\*model.depth"),
        (["loss.class_weights=[1,2,3]"], "loss.class_weights has 3 values"),
        (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path: /nonexistent/last.ckpt does not exist"),
        # wrong types, judged against the signature of what each node configures
        (["data.batch_size=abc"], "data.batch_size='abc': expected an integer"),
        (["data.batch_size=1.5"], "data.batch_size=1.5: expected an integer"),
        (["optimizer.lr=abc"], "optimizer.lr='abc': expected a number"),
        (["threads=abc"], "threads='abc': expected one of 'auto' or an integer or null"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': expected an integer or null"),
        (["model.depth=abc"], "model.depth='abc': expected an integer"),
        (["loss=focal", "loss.gamma=abc"], "loss.gamma='abc': expected a number"),
        (["data.scene.min_cars=abc"], "data.scene.min_cars='abc': expected an integer"),
        (["data.hflip=maybe"], "data.hflip='maybe': expected true or false"),
        (["module.boundary_tolerance=abc"], "module.boundary_tolerance='abc': expected an integer"),
        (["callbacks.prediction_images.every_n_epochs=x"], "callbacks.prediction_images.every_n_epochs='x'"),
        (["trainer.precision=17"], "trainer.precision=17: expected one of 64, 32, 16, 'transformer-engine'"),
        # values the optimizer and scheduler refuse themselves, before any data is made
        (["optimizer.lr=-1"], "optimizer.lr=-1: Invalid learning rate: -1"),
        (["scheduler=step", "scheduler.step_size=abc"], "scheduler.step_size='abc': expected an integer"),
        # more scenes than this machine's memory holds
        (["data.train_size=100000000"], "data.train_size=100000000: the scenes need [0-9.]+ GB in memory"),
    ],
)
def test_bad_values_name_the_key(make_config, overrides, message):
    cfg = make_config(*overrides)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        validate(cfg)
    assert "\n" not in str(error.value)


def test_every_config_of_every_group_passes_the_type_checks(make_config):
    for group in ("model", "loss", "optimizer", "scheduler", "strategy", "experiment", "trainer"):
        for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml")):
            check_types(make_config(f"{group}={path.stem}"))


def test_default_config_is_valid(make_config):
    validate(make_config())
    cfg = make_config()
    with open_dict(cfg):
        cfg.loss.class_weights = [1, 1, 1, 1]
    validate(cfg)
