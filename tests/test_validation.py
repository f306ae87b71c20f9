"""A bad config fails before any work with one line naming the key."""

import pytest
from omegaconf import open_dict

from segsweep.app.config import validate


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
    ],
)
def test_bad_values_name_the_key(make_config, overrides, message):
    cfg = make_config(*overrides)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        validate(cfg)
    assert "\n" not in str(error.value)


def test_default_config_is_valid(make_config):
    validate(make_config())
    cfg = make_config()
    with open_dict(cfg):
        cfg.loss.class_weights = [1, 1, 1, 1]
    validate(cfg)
