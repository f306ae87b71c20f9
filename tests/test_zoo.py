"""The model zoo (model=smp, model=fcn): every architecture trains and evaluates, encoder weights load only locally."""

import json
import logging
import sys

import pytest
import pytorch_lightning as pl
import timm
import torch
from hydra.utils import instantiate
from safetensors.torch import save_file
from segmentation_models_pytorch.encoders import encoders

from segsweep.app.build import build_module
from segsweep.models.nets.smp_models import SMPModel, architectures
from segsweep.models.nets.torchvision_models import FCN, hub_checkpoint_path
from segsweep.models.nets.torchvision_models import FCN_ResNet50_Weights as FCNWeights
from segsweep.runs.cli import one_line

TINY = "tu-mobilenetv3_small_050"  # 0.4M parameters: every architecture but DPT (a ViT-only decoder) takes it
# DPT needs a ViT encoder; a tiny one, on any input size, with a narrow decoder
DPT = ["model.encoder_name=tu-vit_tiny_patch16_224", "+model.kwargs.dynamic_img_size=true",
       "+model.kwargs.decoder_intermediate_channels=[16,32,64,64]", "+model.kwargs.decoder_fusion_channels=16"]  # fmt: skip


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty Hugging Face and torch hub caches, and any download attempt fails the test instead of reaching out."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    for module, name in ((huggingface_hub, "hf_hub_download"), (torch.hub, "download_url_to_file"),
                         (torch.hub, "load_state_dict_from_url")):  # fmt: skip
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", refuse)
    return tmp_path


def hf_snapshot(root, repo_id: str, revision: str, files: dict) -> None:
    """A Hugging Face hub cache entry as the hub client leaves it: snapshots/<commit>/<file>, refs/main -> commit."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, write in files.items():
        write(snapshot / name)


def test_the_architecture_list_is_smps():
    assert set(architectures()) == {name for name in __import__("segmentation_models_pytorch").__all__ if name[0].isupper()}


@pytest.mark.slow
@pytest.mark.parametrize("arch", architectures())
def test_every_architecture_trains_a_step_and_evaluates_by_sliding_windows(make_config, arch, caplog):
    cfg = make_config(
        "debug=fast", "model=smp", f"model.arch={arch}", f"model.encoder_name={TINY}", "data.image_size=64",
        "data.train_size=4", "data.val_size=2", "data.test_size=2", "data.batch_size=2",
        # 40 px tiles: no stride of 16 or 32 divides them, so those architectures pad their input and crop back
        "+module.inference_roi=40", *(DPT if arch == "DPT" else []),
    )  # fmt: skip
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    before = {name: value.clone() for name, value in module.net.state_dict().items()}
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=1, limit_test_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="segsweep.models.nets.smp_models"):
        trainer.fit(module, datamodule=datamodule)
        (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
    changed = [name for name, value in module.net.state_dict().items() if not torch.equal(value, before[name])]
    assert any("encoder" in name for name in changed) and any("encoder" not in name for name in changed)
    assert 0 <= results["test/mIoU"] <= 1
    if 40 % module.net.multiple or module.net.min_side > 40:
        assert f"{arch} needs sides divisible by {module.net.multiple}" in caplog.text


def test_padding_crops_back_to_the_input_size():
    net = SMPModel(arch="Segformer", encoder_name=TINY).eval()
    assert net.multiple == 32
    with torch.no_grad():
        assert net(torch.rand(1, 3, 45, 70)).shape == (1, 4, 45, 70)


@pytest.mark.parametrize("encoder_name", ["resnet18", TINY])
def test_a_local_encoder_file_loads_exactly(encoder_name, tmp_path, offline):
    source = SMPModel(arch="FPN", encoder_name=encoder_name).model.encoder
    path = tmp_path / "encoder.pth"
    torch.save(source.state_dict(), path)
    loaded = SMPModel(arch="FPN", encoder_name=encoder_name, encoder_weights=str(path)).model.encoder.state_dict()
    assert loaded.keys() == source.state_dict().keys()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in source.state_dict().items())
    torch.save(SMPModel(arch="FPN", encoder_name="resnet34").model.encoder.state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'other.pth'} does not fit encoder {encoder_name}: .*missing|unexpected"):
        SMPModel(arch="FPN", encoder_name=encoder_name, encoder_weights=str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pth")):
        SMPModel(encoder_name=encoder_name, encoder_weights=str(tmp_path / "nope.pth"))


def test_smp_weights_by_name_come_from_the_hub_cache_with_their_statistics(offline):
    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    source = SMPModel(encoder_name="resnet18").model.encoder
    stats = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    with pytest.raises(FileNotFoundError) as missing:
        SMPModel(encoder_name="resnet18", encoder_weights="imagenet")
    where = offline / "hf" / "models--smp-hub--resnet18.imagenet" / "snapshots" / settings["revision"] / "model.safetensors"
    assert str(where) in str(missing.value)
    assert f"hf download smp-hub/resnet18.imagenet model.safetensors config.json --revision {settings['revision']}" in str(
        missing.value
    )
    hf_snapshot(offline / "hf", settings["repo_id"], settings["revision"], {
        "model.safetensors": lambda path: save_file(source.state_dict(), str(path)),
        "config.json": lambda path: path.write_text(json.dumps(stats)),
    })  # fmt: skip
    net = SMPModel(encoder_name="resnet18", encoder_weights="imagenet")
    assert all(torch.equal(net.model.encoder.state_dict()[name], value) for name, value in source.state_dict().items())
    assert net.mean.flatten().tolist() == pytest.approx(stats["mean"])
    assert net.std.flatten().tolist() == pytest.approx(stats["std"])
    assert "mean" in net.state_dict(), "a checkpoint records the normalisation it was trained with"
    with pytest.raises(ValueError, match="neither an existing file nor a weights name of resnet18 .*imagenet"):
        SMPModel(encoder_name="resnet18", encoder_weights="imagenet21k")


def test_timm_weights_by_tag_come_from_the_hub_cache(offline):
    cfg = timm.models.get_pretrained_cfg("mobilenetv3_small_050.lamb_in1k")
    pretrained = timm.create_model("mobilenetv3_small_050", pretrained=False)
    with pytest.raises(FileNotFoundError, match=r"models--timm--mobilenetv3_small_050.lamb_in1k/snapshots/main/model.safetensors"
                       r".*hf download timm/mobilenetv3_small_050.lamb_in1k model.safetensors"):  # fmt: skip
        SMPModel(encoder_name=TINY, encoder_weights="lamb_in1k")
    hf_snapshot(offline / "hf", cfg.hf_hub_id, "0123abcd", {
        "model.safetensors": lambda path: save_file(pretrained.state_dict(), str(path))
    })  # fmt: skip
    net = SMPModel(encoder_name=TINY, encoder_weights="imagenet")  # timm's default tag of the model
    encoder = net.model.encoder.model.state_dict()
    for name in ("conv_stem.weight", "bn1.running_var"):
        assert torch.equal(encoder[name], pretrained.state_dict()[name]), name
    assert net.stats_source == "timm pretrained_cfg of mobilenetv3_small_050.lamb_in1k"
    assert net.mean.flatten().tolist() == pytest.approx(list(cfg.mean))


def test_bad_names_and_missing_smp_are_one_line(monkeypatch):
    with pytest.raises(ValueError, match="model.arch=UNetz: not an smp architecture .*DeepLabV3Plus"):
        SMPModel(arch="UNetz")
    with pytest.raises(ValueError, match="model.encoder_name=resnet19: not an smp encoder"):
        SMPModel(encoder_name="resnet19")
    with pytest.raises(ValueError, match="model.encoder_name=tu-nonet: timm has no model 'nonet'"):
        SMPModel(encoder_name="tu-nonet")
    with pytest.raises(ValueError, match="model.kwargs.classes: set it as model.num_classes"):
        SMPModel(kwargs={"classes": 3})
    with pytest.raises(ValueError, match="model.kwargs.aux_params._target_: .*Hydra keys"):
        SMPModel(kwargs={"aux_params": {"_target_": "os.system"}})
    with pytest.raises(ValueError, match=r"model.kwargs.decoder_chanels: not an argument of smp.Unet \(.*decoder_channels"):
        SMPModel(kwargs={"decoder_chanels": [8]})  # smp's own encoders would ignore it silently
    with pytest.raises(ValueError, match=rf"model=smp \(arch=Unet, encoder_name={TINY}\): .*unexpected keyword.*drop_rat\b"):
        SMPModel(encoder_name=TINY, kwargs={"drop_rat": 0.1})  # timm encoders take any keyword: timm's own error
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # as if not installed
    with pytest.raises(ValueError) as error:
        SMPModel()
    assert one_line(error.value).endswith("pip install 'segsweep[zoo]'")


def test_fcn_follows_the_deeplabv3_weights_rules(offline):
    net = FCN(num_classes=4).eval()
    assert net.model.aux_classifier is None
    with torch.no_grad():
        assert net(torch.rand(1, 3, 40, 48)).shape == (1, 4, 40, 48)
    expected = offline / "torch" / "hub" / "checkpoints" / "fcn_resnet50_coco-1167a1af.pth"
    assert hub_checkpoint_path(FCNWeights.COCO_WITH_VOC_LABELS_V1) == expected
    with pytest.raises(FileNotFoundError, match=str(expected)):
        FCN(weights="COCO_WITH_VOC_LABELS_V1")
    expected.parent.mkdir(parents=True)
    coco = FCN(num_classes=21)
    torch.save(coco.model.state_dict(), expected)
    loaded = FCN(num_classes=4, weights="COCO_WITH_VOC_LABELS_V1").model.state_dict()
    assert torch.equal(loaded["backbone.conv1.weight"], coco.model.state_dict()["backbone.conv1.weight"])
    assert loaded["classifier.4.weight"].shape[0] == 4
