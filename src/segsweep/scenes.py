"""Procedural street scenes: batched, pure torch, deterministic per (seed, split, index).

Every random number of image ``i`` in split ``s`` comes from a counter-based hash of
``(seed, s, i)``, so an image never depends on the batch it is generated in, on the number of
DataLoader workers or on the device, and the splits never share an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

CLASS_NAMES: tuple[str, ...] = ("background", "road", "car", "pedestrian")
CLASS_COLORS: tuple[tuple[int, int, int], ...] = ((100, 150, 180), (100, 100, 100), (180, 50, 50), (50, 170, 50))
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2, "predict": 3}
LAYOUTS = ("random", "notebook")
# The colours the notebook draws (its CLASS_COLORS above are only for colouring masks).
SKY_COLOR = (100, 0, 180)
ROAD_GRAY = 100
OBJECT_COLORS = {2: (180, 50, 50), 3: (50, 170, 50)}

_MASK32 = 0xFFFFFFFF
_NOISE_BANK_SEED = 20240917
# Independent random streams of one image: one hash input offset per drawn quantity.
_STREAM_SCENE, _STREAM_OBJECTS, _STREAM_NOISE = 1, 2, 3


@dataclass(frozen=True)
class SceneSpec:
    """What a scene looks like; every field is a config key under ``data.scene``."""

    layout: str = "random"
    min_cars: int = 1
    max_cars: int = 3
    max_pedestrians: int = 3
    pedestrian_prob: float = 0.5
    horizon: tuple[float, float] = (0.35, 0.55)
    car_width: tuple[float, float] = (0.3, 0.5)
    pedestrian_height: tuple[float, float] = (0.3, 0.45)
    noise_std: float = 10.0
    color_jitter: float = 30.0

    def __post_init__(self) -> None:
        checks = {
            "layout": self.layout in LAYOUTS,
            "min_cars": 0 <= self.min_cars <= self.max_cars,
            "max_cars": self.max_cars >= 0,
            "max_pedestrians": self.max_pedestrians >= 0,
            "pedestrian_prob": 0.0 <= self.pedestrian_prob <= 1.0,
            "horizon": 0.0 < self.horizon[0] <= self.horizon[1] < 1.0,
            "car_width": 0.0 < self.car_width[0] <= self.car_width[1],
            "pedestrian_height": 0.0 < self.pedestrian_height[0] <= self.pedestrian_height[1],
            "noise_std": self.noise_std >= 0,
            "color_jitter": self.color_jitter >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"data.scene.{key}: invalid value {getattr(self, key)!r}")


def _hash32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors holding values in [0, 2**32)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def image_keys(seed: int, split: str, indices: Tensor) -> Tensor:
    """One 32-bit key per image, a function of (seed, split, index) alone."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    base = _hash32(_hash32(torch.tensor(seed & _MASK32, dtype=torch.int64)) ^ _hash32(torch.tensor(SPLITS[split] + 1)))
    return _hash32(base + indices.to(torch.int64))


def uniform(keys: Tensor, stream: int, count: int) -> Tensor:
    """``count`` uniform floats in [0, 1) per key, float64 for exact reproducibility."""
    streams = _hash32(keys[:, None] ^ _hash32(torch.tensor(stream, device=keys.device)))
    bits = _hash32(streams + torch.arange(count, device=keys.device))
    return (bits.to(torch.float64) + 0.5) / 2.0**32


@lru_cache(maxsize=8)
def _noise_bank(length: int, std: float) -> Tensor:
    """A fixed table of rounded Gaussian noise that images take windows from.

    Drawing fresh normals for every pixel costs more than the rest of the scene together; a
    window at a per-image hashed offset into one table gives the same per-pixel statistics.
    """
    generator = torch.Generator().manual_seed(_NOISE_BANK_SEED)
    return (torch.randn(length, generator=generator) * std).round().to(torch.int16)


def _noise(keys: Tensor, numel: int, std: float, device: torch.device) -> Tensor:
    windows = 8 * numel
    bank = _noise_bank(windows + numel, float(std)).to(device)
    offsets = (uniform(keys, _STREAM_NOISE, 1)[:, 0] * windows).long()
    return bank.unfold(0, numel, 1)[offsets]


def _inside(coords: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """[B,K,N] float 0/1: whether each coordinate lies in [low, high) of each of K boxes."""
    return ((coords[:, None, :] >= low[..., None]) & (coords[:, None, :] < high[..., None])).float()


def _sorted_objects(keys: Tensor, height: int, width: int, horizon: Tensor, spec: SceneSpec) -> tuple[Tensor, Tensor]:
    """Object boxes [B,K,7] (active, slot, bottom, width, body_h, top_h, left), far to near."""
    batch, device = keys.shape[0], keys.device
    n_cars, n_objects = spec.max_cars, spec.max_cars + spec.max_pedestrians
    draws = uniform(keys, _STREAM_OBJECTS, 8 * max(n_objects, 1))[:, : 8 * n_objects].view(batch, n_objects, 8)
    slot = torch.arange(n_objects, device=device, dtype=torch.float64).expand(batch, n_objects)
    is_car = slot < n_cars
    car_count = spec.min_cars + (uniform(keys, _STREAM_SCENE, 2)[:, 1] * (n_cars - spec.min_cars + 1)).floor()
    active = torch.where(is_car, slot < car_count[:, None], draws[..., 0] < spec.pedestrian_prob)

    # Depth 0 is the horizon, 1 the bottom edge; objects shrink toward the horizon.
    depth = 0.08 + 0.97 * draws[..., 1]
    bottom = horizon[:, None] + depth * (height - horizon[:, None])
    scale = 0.2 + 0.8 * depth
    lerp = lambda bounds, t: bounds[0] + (bounds[1] - bounds[0]) * t  # noqa: E731
    car_width = lerp(spec.car_width, draws[..., 2]) * width * scale
    ped_height = lerp(spec.pedestrian_height, draws[..., 2]) * height * scale
    obj_width = torch.where(is_car, car_width, 0.38 * ped_height)
    body_h = torch.where(is_car, car_width * (0.3 + 0.1 * draws[..., 3]), 0.8 * ped_height)
    top_h = torch.where(is_car, car_width * (0.2 + 0.08 * draws[..., 3]), 0.2 * ped_height)
    left = draws[..., 4] * (width + 0.3 * obj_width) - 0.65 * obj_width

    boxes = torch.stack([active.double(), slot, bottom, obj_width, body_h, top_h, left], dim=-1)
    # Far objects first so that nearer ones (lower on screen) are drawn over them.
    order = torch.where(active, bottom, torch.full_like(bottom, -1.0)).argsort(dim=1)
    return boxes.gather(1, order[..., None].expand_as(boxes)), draws[..., 5:8]


def _random_layout(keys: Tensor, height: int, width: int, spec: SceneSpec) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Slot map, class mask, per-image slot palette and horizon of random scenes."""
    batch, device = keys.shape[0], keys.device
    scene = uniform(keys, _STREAM_SCENE, 8)
    horizon = (spec.horizon[0] + (spec.horizon[1] - spec.horizon[0]) * scene[:, 0]) * height
    boxes, color_draws = _sorted_objects(keys, height, width, horizon, spec)

    jitter = lambda t: (t - 0.5) * 2 * spec.color_jitter  # noqa: E731
    sky = torch.tensor(SKY_COLOR, dtype=torch.float64, device=device) + jitter(scene[:, 2:5])
    road = (ROAD_GRAY + jitter(scene[:, 5:6])).expand(batch, 3)
    object_colors = [OBJECT_COLORS[2]] * spec.max_cars + [OBJECT_COLORS[3]] * spec.max_pedestrians
    objects = torch.tensor(object_colors, dtype=torch.float64, device=device).view(1, -1, 3) + jitter(color_draws)
    palette = torch.cat([sky[:, None], road[:, None], objects], dim=1)

    active, slot, bottom, obj_width, body_h, top_h, left = boxes.unbind(dim=-1)
    # Body and top part (a car's cabin, a pedestrian's head) of each object as two boxes.
    inset = 0.2 * obj_width
    top = torch.cat([bottom - body_h, bottom - body_h - top_h], dim=1)
    rows_in = _inside(torch.arange(height, device=device).expand(batch, height), top, torch.cat([bottom, bottom - body_h], 1))
    lo, hi = torch.cat([left, left + inset], 1), torch.cat([left + obj_width, left + obj_width - inset], 1)
    cols_in = _inside(torch.arange(width, device=device).expand(batch, width), lo, hi)
    # Object k (in drawing order) covers a pixel with bit 2**k; the highest set bit is the object
    # drawn last, i.e. the nearest one. One batched matmul paints every box of every image.
    n_objects = boxes.shape[1]
    bits = (2.0 ** torch.arange(n_objects, device=device)) * active.float()
    cover = torch.bmm(rows_in.transpose(1, 2) * bits.repeat(1, 2)[:, None, :], cols_in)
    nearest = torch.frexp(cover).exponent.clamp(min=0).view(batch, -1).long()
    drawn_slot = torch.cat([torch.zeros(batch, 1, device=device), slot + 2], dim=1).to(torch.uint8)
    slots = drawn_slot.gather(1, nearest).view(batch, height, width)
    below = (torch.arange(height, device=device)[None] >= horizon[:, None]).to(torch.uint8)
    slots = torch.where(slots > 0, slots, below[:, :, None])
    # Slots 2..max_cars+1 are cars, the rest pedestrians: a lookup turns slots into classes.
    slot_class = torch.tensor([0, 1] + [2] * spec.max_cars + [3] * spec.max_pedestrians, dtype=torch.uint8, device=device)
    labels = slot_class[slots.long()]
    return slots, labels, palette, horizon


def _notebook_layout(batch: int, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The seed notebook's fixed scene: sky, road, one car, one pedestrian."""
    slots = torch.zeros(height, width, dtype=torch.uint8, device=device)
    slots[height // 2 :, :] = 1
    slots[height // 2 : 3 * height // 4, width // 4 : 3 * width // 4] = 2
    slots[height // 2 + 10 : height // 2 + 40, 10:25] = 3
    slots = slots.expand(batch, height, width)
    palette = torch.tensor([SKY_COLOR, (ROAD_GRAY,) * 3, OBJECT_COLORS[2], OBJECT_COLORS[3]], dtype=torch.float64)
    horizon = torch.full((batch,), float(height // 2), dtype=torch.float64, device=device)
    return slots, slots.clone(), palette.to(device).expand(batch, 4, 3), horizon


def generate_scenes(
    spec: SceneSpec,
    seed: int,
    split: str,
    indices: Tensor,
    height: int,
    width: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Images ``uint8[B,3,H,W]`` and class masks ``uint8[B,H,W]`` of scenes ``indices`` of ``split``."""
    width = height if width is None else width
    if height < 8 or width < 8:
        raise ValueError(f"data.image_size: scenes need at least 8x8 pixels, got {height}x{width}")
    keys = image_keys(seed, split, torch.as_tensor(indices, device=device))
    batch = keys.shape[0]
    if spec.layout == "notebook":
        slots, labels, palette, horizon = _notebook_layout(batch, height, width, keys.device)
    else:
        slots, labels, palette, horizon = _random_layout(keys, height, width, spec)

    colors = palette.round().clamp(0, 255).to(torch.int16).transpose(1, 2)
    index = slots.reshape(batch, 1, height * width).long().expand(batch, 3, height * width)
    images = colors.gather(2, index).view(batch, 3, height, width)
    # The notebook's sky brightens by 50 in red from top to horizon (np.linspace(100, 150)).
    sky_rows = horizon.ceil().clamp(min=2)
    rows = torch.arange(height, device=keys.device, dtype=torch.float64)
    ramp = (50.0 * rows[None] / (sky_rows[:, None] - 1)).floor().clamp(max=50).to(torch.int16)
    images[:, 0] += ramp[:, :, None] * (slots == 0)
    if spec.noise_std > 0:
        images += _noise(keys, 3 * height * width, spec.noise_std, keys.device).view(batch, 3, height, width)
    return images.clamp_(0, 255).to(torch.uint8), labels
