"""Pretrained encoder weights of the model zoo (``model=smp``) from local files and caches only, and their input statistics.

``model.encoder_weights`` is one of:

- ``null``: random initialisation;
- a local file holding the encoder's state dict (``torch.save(model.net.model.encoder.state_dict())``, a ``.pth``,
  ``.pt``, ``.bin`` or ``.safetensors``), read with ``weights_only=True`` and loaded strictly;
- a weights name: for smp's own encoders one of their ``pretrained_settings`` (``imagenet``, ``ssl`` ...), found in the
  Hugging Face hub cache at the pinned revision smp names; for ``tu-<timm model>`` encoders a timm pretrained tag
  (``a1_in1k``; ``imagenet`` or ``default`` mean timm's default tag), found in the Hugging Face hub cache or the torch
  hub cache. Nothing is downloaded: a name not in the caches is one line naming the path looked for and the command
  that fetches it on a machine with internet.

The input normalisation follows the pretraining statistics, read without a network call: timm's ``pretrained_cfg``
mean/std for timm encoders; for smp's encoders the ``config.json`` beside the cached weights, else ImageNet's.
(smp's ``get_preprocessing_params`` would fetch that config from the hub, so it is not used.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from segsweep.models.nets.torchvision_models import IMAGENET_MEAN, IMAGENET_STD, WEIGHT_SUFFIXES, read_state_dict

# weights names of a timm encoder meaning "timm's default pretrained tag of this model"
DEFAULT_TAGS = ("imagenet", "default")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class EncoderWeights:
    """What building needs: the encoder name smp gets, a file to load, how, and the input statistics (and their source)."""

    encoder_name: str
    file: Path | None
    # timm: the file goes to timm's own loader (pretrained_cfg_overlay), which maps it onto the features model
    through_timm: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stats_source: str


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    explicit = os.environ.get("HF_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hf_cached(repo_id: str, filename: str, revision: str | None = None) -> tuple[Path | None, Path]:
    """A file of a hub repo in the local cache (or None), and the path it is looked for at; never a network call."""
    repo = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    revision = revision or "main"
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    path = repo / "snapshots" / commit / filename
    return (path if path.is_file() else None), path


def _fetch_command(repo_id: str, filenames: tuple[str, ...], revision: str | None) -> str:
    pinned = f" --revision {revision}" if revision else ""
    return f"hf download {repo_id} {' '.join(filenames)}{pinned}"


def resolve_encoder_weights(encoder_name: str, weights: str | os.PathLike | None) -> EncoderWeights:
    """``model.encoder_weights`` for ``encoder_name`` as a local file and statistics (module docstring); never downloads."""
    text = None if weights is None else str(weights)
    path = None if text is None else Path(text).expanduser()
    if path is not None and not path.is_file():
        suffixes = (*WEIGHT_SUFFIXES, ".safetensors")
        if "/" in text or os.sep in text or text.startswith("~") or text.endswith(suffixes):
            raise FileNotFoundError(f"model.encoder_weights: weights file {path} does not exist")
        path = None
    if encoder_name.startswith("tu-"):
        return _timm(encoder_name, text, path)
    return _smp(encoder_name, text, path)


def _timm(encoder_name: str, text: str | None, path: Path | None) -> EncoderWeights:
    import timm

    name, tag = timm.models.split_model_name_tag(encoder_name[3:])
    if not timm.models.is_model(name):
        raise ValueError(f"model.encoder_name={encoder_name}: timm has no model {name!r} (timm.list_models() names them)")
    if text is not None and path is None and text not in DEFAULT_TAGS:
        tag = text  # a pretrained tag given as the weights name
    full = f"{name}.{tag}" if tag else name
    cfg = timm.models.get_pretrained_cfg(full)
    if cfg is not None and cfg.tag and not tag:
        full = f"{name}.{cfg.tag}"  # the default tag, named: that is where the cache holds it
    if text is not None and path is None and cfg is None:
        raise ValueError(
            f"model.encoder_weights={text}: timm has no pretrained weights {full!r} for model.encoder_name={encoder_name}"
        )
    mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else (IMAGENET_MEAN, IMAGENET_STD)
    source = f"timm pretrained_cfg of {full}" if cfg is not None else "ImageNet (timm has no pretrained_cfg for it)"
    if text is None or path is not None:  # random, or the user's own file of this encoder's state dict
        return EncoderWeights(f"tu-{name}", path, False, mean, std, source)
    return EncoderWeights(f"tu-{full}", _timm_cached(cfg, full, text), True, mean, std, source)


def _timm_cached(cfg: Any, full: str, text: str) -> Path:
    """The cached file of timm weights ``full``: the Hugging Face hub cache, then the torch hub cache."""
    looked = []
    if cfg.hf_hub_id:
        filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILES
        for filename in filenames:
            found, where = hf_cached(cfg.hf_hub_id, filename)
            if found is not None:
                return found
            looked.append(str(where))
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if cached.is_file():
            return cached
        looked.append(str(cached))
    if not looked:
        raise ValueError(f"model.encoder_weights={text}: timm names no source of the weights {full}")
    fetch = _fetch_command(cfg.hf_hub_id, filenames[:1], None) if cfg.hf_hub_id else f"curl -L -o {looked[-1]} {cfg.url}"
    raise FileNotFoundError(
        f"model.encoder_weights={text}: timm weights {full} are not in the local caches (looked for {' and '.join(looked)}; "
        f"nothing is downloaded here): on a machine with internet run `{fetch}` and copy the cache here, "
        "or set model.encoder_weights to a local state-dict file"
    )


def _smp(encoder_name: str, text: str | None, path: Path | None) -> EncoderWeights:
    from segmentation_models_pytorch.encoders import encoders

    if encoder_name not in encoders:
        raise ValueError(
            f"model.encoder_name={encoder_name}: not an smp encoder (smp.encoders.get_encoder_names() lists them; "
            "any timm model is tu-<name>)"
        )
    settings = encoders[encoder_name]["pretrained_settings"]
    if text is not None and path is None and text not in settings:
        names = ", ".join(settings) or "none"
        raise ValueError(f"model.encoder_weights={text}: neither an existing file nor a weights name of {encoder_name} ({names})")
    chosen = settings.get(text if path is None and text is not None else "imagenet") or next(iter(settings.values()), None)
    mean, std, source = IMAGENET_MEAN, IMAGENET_STD, "ImageNet (no cached config.json of the encoder's weights)"
    if chosen is not None:
        config, _ = hf_cached(chosen["repo_id"], "config.json", chosen["revision"])
        if config is not None:
            stats = json.loads(config.read_text())
            mean, std, source = tuple(stats["mean"]), tuple(stats["std"]), f"{config}"
    if text is None or path is not None:
        return EncoderWeights(encoder_name, path, False, mean, std, source)
    repo_id, revision = chosen["repo_id"], chosen["revision"]
    found, where = hf_cached(repo_id, "model.safetensors", revision)
    if found is None:
        raise FileNotFoundError(
            f"model.encoder_weights={text}: {where} not found (nothing is downloaded here): on a machine with internet run "
            f"`{_fetch_command(repo_id, ('model.safetensors', 'config.json'), revision)}` and copy the cache here, "
            "or set model.encoder_weights to a local state-dict file"
        )
    return EncoderWeights(encoder_name, found, False, mean, std, source)


def read_encoder_file(path: Path) -> dict[str, Tensor]:
    """The tensors of an encoder weights file: safetensors, or a state dict read by torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # safetensors' header and I/O errors
            raise ValueError(f"model.encoder_weights: {path}: not a readable safetensors file ({error})") from error
    return read_state_dict(path, "encoder_weights")


def load_encoder(encoder: nn.Module, path: Path, encoder_name: str) -> None:
    """Load an encoder state dict strictly: every tensor of the encoder from the file, and nothing else in it."""
    state = read_encoder_file(path)
    own = encoder.state_dict()
    missing = [name for name in own if name not in state]
    unexpected = [name for name in state if name not in own]
    shapes = [f"{name} {tuple(state[name].shape)} vs {tuple(value.shape)}" for name, value in own.items()
              if name in state and state[name].shape != value.shape]  # fmt: skip
    if missing or unexpected or shapes:
        problems = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        problems += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        problems += [f"{len(shapes)} of another shape (e.g. {shapes[0]})"] if shapes else []
        raise ValueError(
            f"model.encoder_weights: {path} does not fit encoder {encoder_name}: {'; '.join(problems)} "
            "(expected torch.save(<the encoder>.state_dict()) of the same encoder)"
        )
    encoder.load_state_dict(state, strict=True)
