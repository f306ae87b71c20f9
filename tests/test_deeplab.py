"""torchvision networks (model=deeplabv3, model=lraspp): logits, local weights only, training through the Trainer."""

import importlib.util
import logging
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from torchvision.models import mobilenet_v3_large, resnet50
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from segsweep.app.build import build_module, load_module
from segsweep.data.scenes_datamodule import SceneDataModule
from segsweep.models.nets.torchvision_models import LRASPP, DeepLabV3, hub_checkpoint_path
from segsweep.models.nets.torchvision_models import LRASPP_MobileNet_V3_Large_Weights as LRASPPWeights

from .helpers.commands import REPO_ROOT, run_module
from .helpers.outputs import read_metrics


@pytest.fixture
def no_downloads(monkeypatch, tmp_path):
    """An empty torch hub cache, and any download attempt fails the test instead of hanging."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_deeplabv3_config_forward_backward_at_64px(make_config):
    cfg = make_config("model=deeplabv3", "data.image_size=64", "data.train_size=2", "data.val_size=2", "data.test_size=2")
    module = build_module(cfg, SceneDataModule(image_size=64, train_size=2, val_size=2, test_size=2))
    assert isinstance(module.net, DeepLabV3)
    assert module.net.model.aux_classifier is None
    images, masks = torch.rand(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    module.train()
    logits = module(images)
    assert logits.shape == (2, 4, 64, 64)
    loss = module.loss(logits, masks)
    loss.backward()
    grads = [p.grad for p in module.net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert module.net.model.classifier[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="batch of 1"):
        module(images[:1])  # train mode, a clear message instead of BatchNorm's
    module.eval()
    with torch.no_grad():
        assert module(images[:1]).shape == (1, 4, 64, 64)  # eval mode takes one image


def test_imagenet_normalisation_is_inside_the_wrapper():
    net = LRASPP(num_classes=4).eval()
    images = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(net(images), net.model((images - mean) / std)["out"], atol=1e-6)
    assert not any(name in net.state_dict() for name in ("mean", "std")), "normalisation constants stay out of checkpoints"


def test_backbone_weights_from_a_local_file(make_config, tmp_path):
    backbone = resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(backbone.state_dict(), path)
    cfg = make_config("model=deeplabv3", f"model.weights_backbone={path}")
    net = instantiate(cfg.model)
    loaded = net.model.backbone.state_dict()
    for name, tensor in backbone.state_dict().items():
        if not name.startswith("fc."):  # the ImageNet classifier is not part of a segmentation backbone
            assert torch.equal(loaded[name], tensor), name


def test_coco_weights_by_name_from_the_hub_cache_skip_the_head(make_config, no_downloads, caplog):
    coco = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    cached = hub_checkpoint_path(LRASPPWeights.COCO_WITH_VOC_LABELS_V1)
    assert cached.parent == no_downloads
    cached.parent.mkdir(parents=True)
    torch.save(coco.state_dict(), cached)
    cfg = make_config("model=lraspp", "model.weights=COCO_WITH_VOC_LABELS_V1")
    with caplog.at_level(logging.INFO, logger="segsweep.models.nets.torchvision_models"):
        net = instantiate(cfg.model)
    state, source = net.model.state_dict(), coco.state_dict()
    assert torch.equal(state["backbone.0.0.weight"], source["backbone.0.0.weight"])
    assert torch.equal(state["classifier.cbr.0.weight"], source["classifier.cbr.0.weight"])
    assert state["classifier.high_classifier.weight"].shape[0] == 4  # a 4-class head, freshly initialised
    assert "another shape" in caplog.text
    assert "classifier.high_classifier.weight" in caplog.text


def test_full_model_and_mobilenet_backbone_files(tmp_path):
    mobilenet = mobilenet_v3_large(weights=None)
    torch.save({"model": mobilenet.state_dict()}, tmp_path / "mobilenet.pt")  # wrapped, with torchvision's names
    trained = LRASPP(num_classes=4)
    torch.save({"state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "run.ckpt")
    net = LRASPP(num_classes=4, weights_backbone=str(tmp_path / "mobilenet.pt"))
    assert torch.equal(net.model.backbone.state_dict()["0.0.weight"], mobilenet.state_dict()["features.0.0.weight"])
    net = LRASPP(num_classes=4, weights=str(tmp_path / "run.ckpt"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), trained.state_dict().values()))


def test_missing_weights_are_a_clear_error_never_a_download(no_downloads, tmp_path):
    expected = no_downloads / "deeplabv3_resnet50_coco-cd0a2569.pth"
    with pytest.raises(FileNotFoundError, match=str(expected)):
        DeepLabV3(weights="COCO_WITH_VOC_LABELS_V1")
    with pytest.raises(FileNotFoundError, match="resnet50-0676ba61.pth"):
        DeepLabV3(weights_backbone="ResNet50_Weights.IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pth")):
        LRASPP(weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="neither an existing file nor a weights name"):
        LRASPP(weights="IMAGENET_PLEASE")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="junk.pth"):
        LRASPP(weights=str(tmp_path / "junk.pth"))
    torch.save(resnet50(weights=None).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="no tensor of .*resnet.pth fits"):
        LRASPP(weights_backbone=str(tmp_path / "resnet.pth"))


def test_lraspp_trains_through_the_same_trainer(tmp_path):
    run_dir = tmp_path / "lraspp"
    run_module("segsweep.train", "debug=fast", "model=lraspp", f"hydra.run.dir={run_dir}")
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["config"]["model"]["_target_"].endswith("LRASPP")
    assert 0 <= metrics["test"]["test/mIoU"] <= 1
    module, cfg = load_module(run_dir)
    assert isinstance(module.net, LRASPP)
    with torch.no_grad():
        assert module(torch.rand(1, 3, 48, 40)).shape == (1, 4, 48, 40)


def test_deeplabv3_demo_script(tmp_path, capsys):
    script = REPO_ROOT / "scripts" / "deeplabv3_demo.py"
    output = tmp_path / "demo.png"
    result = subprocess.run(
        [sys.executable, str(script), "--size", "64", "--output", str(output)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no pretrained weights" in result.stdout
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    spec = importlib.util.spec_from_file_location("deeplabv3_demo", script)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    with pytest.raises(SystemExit):
        demo.parse_args(["--help"])
    assert "--weights" in capsys.readouterr().out
    assert demo.main(["--size", "64", "--weights", str(tmp_path / "coco.pth")]) == 1
    assert str(tmp_path / "coco.pth") in capsys.readouterr().err


class Payload:
    """Not a tensor or container: unpickling it would run arbitrary code paths."""


def test_weights_files_are_read_weights_only(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": Payload()}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match="unsafe.pth: refused, loading it needs arbitrary unpickling .*Payload"):
        LRASPP(weights=str(tmp_path / "unsafe.pth"))
