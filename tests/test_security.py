"""Safe inputs: a checkpoint's config may only name allowlisted classes; oversized images are refused before decoding."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
import yaml
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from PIL import Image

from segsweep.app.build import load_module
from segsweep.app.resume import saved_config
from segsweep.data.images import ImageError, read_image
from segsweep.report import build_report
from segsweep.runs.allowlist import (
    ALLOWED_PACKAGES,
    ALLOWED_TARGETS,
    MOVED_TARGETS,
    UnsafeConfigError,
    check_config,
    check_saved_config,
    config_targets,
    is_allowed,
    renamed_targets,
)
from segsweep.runs.checkpoint import CheckpointError

from .helpers.commands import REPO_ROOT, run_module
from .helpers.outputs import fake_job, read_metrics

# ---------------------------------------------------------------- the allowlist and conf/


def conf_targets() -> dict[str, str]:
    """Every _target_ anywhere under conf/, with the file and key it appears at."""
    found = {}
    for path in sorted((REPO_ROOT / "conf").rglob("*.yaml")):
        for key_path, target in config_targets(yaml.safe_load(path.read_text()) or {}):
            found[f"{path.relative_to(REPO_ROOT)}:{key_path}"] = target
    return found


def test_every_target_under_conf_is_allowed_and_the_list_holds_nothing_else():
    targets = conf_targets()
    assert len(targets) > 20
    refused = {where: target for where, target in targets.items() if not is_allowed(target)}
    assert not refused
    # the exact entries are exactly what conf/ names outside the project packages: the list cannot drift
    outside = {target for target in targets.values() if not target.startswith(tuple(ALLOWED_PACKAGES))}
    assert outside == ALLOWED_TARGETS


@pytest.mark.parametrize(
    "target",
    [
        "segsweep.data.scenes_datamodule.SceneDataModule",
        "segsweep.models.nets.unet.UNet",
        "segsweep.models.nets.torchvision_models.DeepLabV3",
        "segsweep.models.losses.dice.DiceCELoss",
    ],
)
def test_project_classes_are_allowed_by_where_they_are_defined(target):
    assert is_allowed(target)


@pytest.mark.parametrize(
    "target",
    [
        "torch.load",
        "builtins.open",
        "segsweep.models.losses.dice.torch.load",  # resolves through an allowed module to an import
        "segsweep.data.scenes_datamodule.torch.load",
        "segsweep.models.nets.unet.nn.Module",
        "segsweep.data.scenes.generate_scenes",  # a function of an allowed package, not a datamodule
        "segsweep.data.scenes_datamodule.SceneDataset",  # a class, but not a datamodule
        "segsweep.models.losses",
        "segsweep.data..SceneDataModule",
        "torch.optim.Adam.step",
        "hydra.utils.get_method",
    ],
)
def test_everything_else_is_refused(target):
    assert not is_allowed(target)


@pytest.mark.parametrize(
    ("node", "key", "reason"),
    [
        ({"optimizer": {"_target_": "torch.optim.Adam", "_partial_": "yes"}}, "optimizer._partial_", "expected one of"),
        ({"optimizer": {"_target_": "torch.optim.Adam", "_convert_": "evil"}}, "optimizer._convert_", "expected one of"),
        ({"model": {"_args_": [1], "depth": 2}}, "model._args_", "without a _target_"),
        ({"model": {"_target_": "segsweep.models.nets.unet.UNet", "_args_": "x"}}, "model._args_", "must be a list"),
        ({"model": {"_target_": {"_target_": "torch.optim.Adam"}}}, "model._target_", "not a class name"),
        ({"data": {"root": "${oc.env:HOME}"}}, "data.root", "interpolation"),
    ],
)
def test_hydra_key_tricks_are_refused(node, key, reason):
    with pytest.raises(UnsafeConfigError) as error:
        check_saved_config(node, "x.ckpt")
    assert str(error.value).startswith(f"x.ckpt: config key {key} ") and reason in str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [(), ("model=deeplabv3", "optimizer=sgd", "scheduler=step"), ("model=lraspp", "loss=dice_ce", "optimizer=adamw")],
)
def test_composed_configs_pass_and_an_edited_one_is_refused(make_config, overrides, tmp_path):
    cfg = make_config(*overrides)
    check_config(cfg, "conf/train.yaml")
    # an interpolation that builds a _target_ node only when resolved is seen resolved
    with open_dict(cfg):
        cfg.model.extra = "${oc.create:{_target_: builtins.open, file: x, mode: w}}"
    with pytest.raises(UnsafeConfigError, match=r"^elsewhere/train.yaml: config key model.extra._target_ names builtins.open"):
        check_config(cfg, "elsewhere/train.yaml")
    assert isinstance(UnsafeConfigError("x"), CheckpointError)


# ---------------------------------------------------------------- crafted checkpoints


class Harm:
    """What an attack would leave behind in ``root``: a marker file, or a victim directory gone."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.marker = root / "marker"
        self.victim = root / "victim"
        self.victim.mkdir(parents=True, exist_ok=True)
        (self.victim / "keep.txt").write_text("precious\n")

    def done(self) -> bool:
        return self.marker.exists() or not self.victim.exists()


class _Touch:
    """Unpickling this opens the marker for writing: the payload of a pickle a config may smuggle in."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (self.path, "w")


def _pickle_chain(harm: Harm) -> dict[str, Any]:
    payload = base64.b64encode(pickle.dumps(_Touch(harm.marker))).decode()
    bytes_io = {"_target_": "io.BytesIO", "initial_bytes": {"_target_": "base64.b64decode", "s": payload}}
    return {"_target_": "torch.load", "weights_only": False, "f": bytes_io}


def _pickle_file(harm: Harm) -> dict[str, Any]:
    path = harm.root / "payload.pkl"
    path.write_bytes(pickle.dumps(_Touch(harm.marker)))
    return {"_target_": "segsweep.data.scenes_datamodule.torch.load", "weights_only": False, "f": str(path)}


def _unet(**extra: Any) -> dict[str, Any]:
    return {"_target_": "segsweep.models.nets.unet.UNet", "num_classes": 4, **extra}


def _open(harm: Harm) -> dict[str, Any]:
    return {"_target_": "builtins.open", "file": str(harm.marker), "mode": "w"}


class Chain(NamedTuple):
    key: str  # the top-level config key it replaces
    build: Callable[[Harm], Any]  # its new value
    refused: str  # the key path the refusal names
    hydra_blocks: bool = False  # Hydra 1.3.8's own blocklist stops it too (defence in depth); the others only we stop


def _system(harm: Harm) -> dict[str, Any]:
    return {"_target_": "os.system", "_args_": [f"touch {harm.marker}"]}


CHAINS = {
    "torch_load_pickle": Chain("data", _pickle_chain, "data._target_"),
    "through_an_allowed_module": Chain("data", _pickle_file, "data._target_"),
    "builtins_open": Chain("model", _open, "model._target_"),
    "pathlib_write_text": Chain(
        "loss",
        lambda harm: {
            "_target_": "pathlib.Path.write_text",
            "self": {"_target_": "pathlib.Path", "_args_": [str(harm.marker)]},
            "data": "x",
        },
        "loss._target_",
    ),
    "hidden_in_args": Chain("model", lambda harm: _unet(_args_=[_open(harm)]), "model._args_[0]._target_"),
    "in_a_list": Chain(
        "model",
        lambda harm: _unet(extra=[1, {"_target_": "shutil.copyfile", "src": __file__, "dst": str(harm.marker)}]),
        "model.extra[1]._target_",
    ),
    "nested_in_the_optimizer_partial": Chain(
        "optimizer",
        lambda harm: {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01, "betas": _open(harm)},
        "optimizer.betas._target_",
    ),
    "interpolation": Chain(
        "model",
        lambda harm: _unet(extra=f"${{oc.create:{{_target_: builtins.open, file: '{harm.marker}', mode: w}}}}"),
        "model.extra",
    ),
    "os_system": Chain("loss", _system, "loss._target_", hydra_blocks=True),
    "os_system_in_args": Chain("model", lambda harm: _unet(_args_=[_system(harm)]), "model._args_[0]._target_", True),
    "subprocess_popen": Chain(
        "scheduler",
        lambda harm: {"_target_": "subprocess.Popen", "args": ["touch", str(harm.marker)]},
        "scheduler._target_",
        hydra_blocks=True,
    ),
    "shutil_rmtree": Chain(
        "loss", lambda harm: {"_target_": "shutil.rmtree", "path": str(harm.victim)}, "loss._target_", hydra_blocks=True
    ),
}


def crafted_checkpoint(fast_run: Path, path: Path, chain: str, harm: Harm) -> Path:
    """The fast run's best.ckpt with one config key replaced by the chain."""
    checkpoint = torch.load(fast_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["config"][CHAINS[chain].key] = CHAINS[chain].build(harm)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def assert_refused(output: str, checkpoint: Path, chain: str) -> None:
    """One line names the checkpoint and the key; no traceback."""
    lines = [line for line in output.splitlines() if "config key" in line]
    assert len(lines) == 1, output[-3000:]
    assert f"{checkpoint}: config key {CHAINS[chain].refused} " in lines[0], lines[0]
    assert "Traceback" not in output


@pytest.mark.parametrize("chain", CHAINS)
def test_each_chain_would_run_code_if_instantiated(chain, tmp_path):
    """Without the allowlist each crafted node does harm, or (some) Hydra's own blocklist stops it."""
    harm = Harm(tmp_path)
    key, build, _, hydra_blocks = CHAINS[chain]
    try:
        instantiate(OmegaConf.create({key: build(harm)})[key])
    except (InstantiationException, TypeError) as error:  # the harm is done before the call that fails
        assert hydra_blocks == ("blocklisted" in str(error)), error
    assert harm.done() != hydra_blocks


@pytest.mark.parametrize("chain", CHAINS)
def test_load_module_refuses_before_instantiating(fast_run, tmp_path, chain):
    harm = Harm(tmp_path)
    checkpoint = crafted_checkpoint(fast_run, tmp_path / "best.ckpt", chain, harm)
    with pytest.raises(UnsafeConfigError) as error:
        load_module(checkpoint)
    assert_refused(str(error.value), checkpoint, chain)
    assert not harm.done()


# Through the real entry points (a process each, ~8 s of CPU): one chain of each kind. Every chain goes through
# load_module above, the one door eval, predict and the report's grid all use, and through the report below.
ENTRY_POINT_CHAINS = ("torch_load_pickle", "hidden_in_args", "interpolation", "shutil_rmtree")


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", ["segsweep.eval", "segsweep.predict"])
@pytest.mark.parametrize("chain", ENTRY_POINT_CHAINS)
def test_eval_and_predict_refuse_a_crafted_checkpoint(fast_run, tmp_path, chain, entry_point):
    harm = Harm(tmp_path / "harm")
    checkpoint = crafted_checkpoint(fast_run, tmp_path / "run" / "checkpoints" / "best.ckpt", chain, harm)
    args = ["input=generate", "size=32"] if entry_point == "segsweep.predict" else []
    result = run_module(entry_point, f"ckpt_path={tmp_path / 'run'}", *args, f"hydra.run.dir={tmp_path / 'out'}", check=False)
    assert result.returncode == 1
    assert_refused(result.stdout + result.stderr, checkpoint, chain)
    assert not harm.done()


def test_the_report_leaves_out_a_crafted_checkpoint_and_names_it(fast_run, tmp_path, monkeypatch):
    harm = Harm(tmp_path / "harm")
    monkeypatch.chdir(harm.root)
    sweep = tmp_path / "sweep"
    for chain in CHAINS:
        job = sweep / f"chain={chain}"
        fake_job(job, [f"chain={chain}"], 0.5, [0.5])
        crafted_checkpoint(fast_run, job / "checkpoints" / "best.ckpt", chain, harm)
    report = build_report(sweep, num_images=2)
    assert not harm.done()
    notes = [note for note in report.notes if "config key" in note]
    assert len(notes) == len(CHAINS)
    for chain in CHAINS:
        checkpoint = sweep / f"chain={chain}" / "checkpoints" / "best.ckpt"
        (note,) = [note for note in notes if str(checkpoint) in note]
        assert f"{checkpoint}: config key {CHAINS[chain].refused} " in note and "\n" not in note
    assert "predictions" not in report.paths  # no run loaded, so no grid


def test_an_untouched_checkpoint_still_loads(fast_run):
    module, cfg = load_module(fast_run)
    assert cfg.data._target_ == "segsweep.data.scenes_datamodule.SceneDataModule" and not module.training


def with_old_targets(config: Any) -> Any:
    """``config`` with the paths of the moved classes as checkpoints written before the move name them."""
    old = {new: old for old, new in MOVED_TARGETS.items()}
    if isinstance(config, dict):
        renamed = {key: with_old_targets(value) for key, value in config.items()}
        if renamed.get("_target_") in old:
            renamed["_target_"] = old[renamed["_target_"]]
        return renamed
    return [with_old_targets(item) for item in config] if isinstance(config, list) else config


def test_a_checkpoint_naming_the_old_paths_still_evaluates(fast_run, tmp_path):
    checkpoint = torch.load(fast_run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    saved = checkpoint["hyper_parameters"]["config"] = with_old_targets(checkpoint["hyper_parameters"]["config"])
    assert saved["data"]["_target_"] == "segsweep.data.datamodule.SceneDataModule"
    assert saved["callbacks"]["metrics_file"]["_target_"] == "segsweep.runs.callbacks.MetricsFile"
    old = tmp_path / "run" / "checkpoints" / "best.ckpt"
    old.parent.mkdir(parents=True)
    torch.save(checkpoint, old)
    module, cfg = load_module(old)
    assert cfg.data._target_ == "segsweep.data.scenes_datamodule.SceneDataModule" and not module.training
    run_module("segsweep.eval", f"ckpt_path={old}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"]["test/mIoU"] >= 0


def test_only_the_moved_paths_are_renamed():
    moved = {"data": {"_target_": "segsweep.data.datamodule.SceneDataModule"}}
    with pytest.raises(UnsafeConfigError, match="names segsweep.data.datamodule.SceneDataModule"):
        check_saved_config(moved, "old.ckpt")  # the old path itself is never imported
    check_saved_config(renamed_targets(moved), "old.ckpt")
    crafted = {"data": {"_target_": "segsweep.data.datamodule.torch.load", "f": "x"}}
    assert renamed_targets(crafted) == crafted
    with pytest.raises(UnsafeConfigError, match="names segsweep.data.datamodule.torch.load"):
        check_saved_config(renamed_targets(crafted), "old.ckpt")


# ---------------------------------------------------------------- checkpoints from before a class moved


def test_moved_targets_name_allowed_classes_and_their_old_paths_are_not_allowed_as_written():
    for old, new in MOVED_TARGETS.items():
        assert is_allowed(new), new
        assert not is_allowed(old), old  # the old path loads only through the table, as exactly its new class
    node = {"loss": {"_target_": "segsweep.models.tversky.TverskyLoss"}, "x": [{"_target_": "torch.optim.Adam"}]}
    assert renamed_targets(node) == {"loss": {"_target_": "segsweep.models.losses.tversky.TverskyLoss"}, "x": node["x"]}
    assert node["loss"]["_target_"] == "segsweep.models.tversky.TverskyLoss"  # a copy: the input is kept


def checkpoint_naming(fast_run: Path, path: Path, loss: dict[str, Any]) -> Path:
    """The fast run's best.ckpt with its saved loss node replaced, as a run of an older segsweep would have saved it."""
    checkpoint = torch.load(fast_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["config"]["loss"] = loss
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("old", [old for old in MOVED_TARGETS if old.startswith("segsweep.models.")])
def test_a_checkpoint_naming_an_old_loss_path_loads_with_the_new_class(fast_run, tmp_path, old):
    module, cfg = load_module(checkpoint_naming(fast_run, tmp_path / "best.ckpt", {"_target_": old}))
    assert cfg.loss._target_ == MOVED_TARGETS[old]
    assert f"{type(module.loss).__module__}.{type(module.loss).__name__}" == MOVED_TARGETS[old]
    logits = module(torch.rand(2, 3, 32, 32))
    assert torch.isfinite(module.loss(logits, logits.argmax(1)))


def test_a_checkpoint_saved_before_the_losses_moved_evaluates_as_it_did(fast_run, tmp_path):
    """The fast run's checkpoint as the segsweep before models/losses/ wrote it: eval reproduces its test metrics."""
    old = {"_target_": "segsweep.models.losses.CrossEntropyLoss", "class_weights": None, "label_smoothing": 0.0}
    checkpoint_naming(fast_run, tmp_path / "run" / "checkpoints" / "best.ckpt", old)
    (tmp_path / "run" / "metrics.json").write_text((fast_run / "metrics.json").read_text())
    run_module("segsweep.eval", f"ckpt_path={tmp_path / 'run'}", f"hydra.run.dir={tmp_path / 'eval'}")
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"]
    recorded = read_metrics(fast_run)["test"]
    for name in ("test/mIoU", "test/loss"):
        assert metrics[name] == pytest.approx(recorded[name], abs=1e-6), name


def test_a_run_dir_from_before_the_losses_moved_continues_with_the_new_paths(fast_run, tmp_path, make_config):
    """Resuming reads the run's .hydra/config.yaml, or its last.ckpt's config: either may name an old loss path."""
    make_config()  # the hydra: interpolations of .hydra/config.yaml resolve inside a run, as a resume is
    old, new = "segsweep.models.losses.CrossEntropyLoss", "segsweep.models.losses.cross_entropy.CrossEntropyLoss"
    records = tmp_path / "records"
    shutil.copytree(fast_run / ".hydra", records / ".hydra")
    config = records / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace(new, old))
    from_checkpoint = tmp_path / "checkpoint"
    checkpoint_naming(fast_run, from_checkpoint / "checkpoints" / "last.ckpt", {"_target_": old})
    for run in (records, from_checkpoint):
        cfg, _ = saved_config(run)
        assert cfg.loss._target_ == new, run


@pytest.mark.parametrize(
    "target",
    [
        "segsweep.models.tversky.soft_counts",  # an old module's function, never a moved class
        "segsweep.models.losses._prepare",
        "segsweep.models.losses.torch.load",
        "segsweep.models.losses.dice.soft_counts",  # imported into a loss module, not a loss
        "segsweep.models.losses.DiceLoss.forward",
    ],
)
def test_a_checkpoint_naming_anything_else_near_the_losses_is_refused(fast_run, tmp_path, target):
    checkpoint = checkpoint_naming(fast_run, tmp_path / "best.ckpt", {"_target_": target})
    with pytest.raises(UnsafeConfigError) as error:
        load_module(checkpoint)
    assert str(error.value).startswith(f"{checkpoint}: config key loss._target_ names {target}, ")


# ---------------------------------------------------------------- decompression bombs


def palette_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit palette PNG of width x height, all pixels 0: tiny on disk, streamed so it is never in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", bytes([0, 0, 0, 255, 255, 255]))
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return palette_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 13000, 13000)


def test_a_big_image_is_refused_from_its_header(bomb):
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ImageError) as error:
        read_image(bomb)  # the default limit, 100 megapixels
    assert str(error.value) == (
        f"{bomb}: refused, 13000x13000 = 169.0 megapixels is more than max_pixels=100000000 (raise max_pixels to allow it)"
    )


def test_the_pixel_limit_is_ours_not_pils(tmp_path, monkeypatch):
    small = palette_png(tmp_path / "small.png", 100, 80)
    with pytest.raises(ImageError, match=r"100x80 = 0.0 megapixels is more than max_pixels=7999 "):
        read_image(small, max_pixels=7999)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL alone would refuse 8000 pixels (> 2 x 1000)
    assert read_image(small, max_pixels=8000).shape == (3, 80, 100)
    assert read_image(small, max_pixels=None).shape == (3, 80, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored


def test_predict_refuses_the_bomb_in_one_line_and_segments_the_rest(fast_run, bomb, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (90, 120, 30)).save(good)
    out = tmp_path / "out"
    result = run_module(
        "segsweep.predict", f"ckpt_path={fast_run}", f"input=[{bomb},{good}]", f"hydra.run.dir={out}", check=False
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    (line,) = [line for line in output.splitlines() if "ERROR" in line and str(bomb) in line]
    assert "13000x13000" in line and "max_pixels=100000000" in line
    assert "Traceback" not in output and "DecompressionBomb" not in output
    report = json.loads((out / "predictions.json").read_text())
    assert {Path(entry["input"]).name: entry["status"] for entry in report["predictions"]} == {
        "bomb.png": "failed",
        "good.png": "ok",
    }
    assert report["failed"] == 1 and (out / "good_mask.png").is_file() and not (out / "bomb_mask.png").exists()


def test_max_pixels_must_be_a_positive_int_or_null(fast_run, bomb, tmp_path):
    result = run_module(
        "segsweep.predict", f"ckpt_path={fast_run}", f"input={bomb}", "max_pixels=0", f"hydra.run.dir={tmp_path}", check=False
    )
    assert result.returncode == 1
    assert "max_pixels must be a positive int or null (no limit), got 0" in result.stdout + result.stderr
