"""Procedural street scenes: batched torch, deterministic per (seed, split, index).

Every random number of image ``i`` in split ``s`` comes from a counter-based hash of
``(seed, s, i)``, so an image never depends on the batch it is generated in, on the number of
DataLoader workers or on the device, and the splits never share an image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from segsweep.data.classes import DatasetClasses

CLASS_NAMES: tuple[str, ...] = ("background", "road", "car", "pedestrian")
CLASS_COLORS: tuple[tuple[int, int, int], ...] = ((100, 150, 180), (100, 100, 100), (180, 50, 50), (50, 170, 50))
SCENE_CLASSES = DatasetClasses(CLASS_NAMES, CLASS_COLORS)
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
# Objects per scene: the drawing keeps sky, road and every object as a bit of a float64's integer part.
_MAX_OBJECTS = 51
# Pixels per chunk of the drawing loop, so that its working set stays in the caches.
_CHUNK_PIXELS = 1 << 19


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
        if self.max_cars + self.max_pedestrians > _MAX_OBJECTS:
            raise ValueError(
                f"data.scene.max_pedestrians: max_cars + max_pedestrians must be at most {_MAX_OBJECTS}, "
                f"got {self.max_cars} + {self.max_pedestrians}"
            )


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


def _spans(low: Tensor, high: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Integer ``[start, stop)`` of the pixel coordinates ``c`` with ``low <= c < high`` (float bounds), within ``[0, size)``.

    For an integer ``c``, ``c >= low`` is ``c >= ceil(low)`` and ``c < high`` is ``c < ceil(high)``: exact, so the
    spans hold the same pixels as comparing every coordinate with the float bounds.
    """
    start = low.ceil().clamp(0, size).long()
    return start, torch.maximum(high.ceil().clamp(0, size).long(), start)


def _coverage(start: Tensor, stop: Tensor, bits: Tensor, size: int) -> Tensor:
    """``[B, size]``: the OR of the ``bits`` ``[B, K]`` (distinct powers of two) of the spans covering each coordinate."""
    steps = torch.zeros(start.shape[0], size + 1, dtype=bits.dtype, device=bits.device)
    steps.scatter_add_(1, start, bits).scatter_add_(1, stop, -bits)
    return steps[:, :size].cumsum(1, dtype=bits.dtype)


@dataclass
class _Layout:
    """The boxes of a batch of scenes, before any pixel is drawn.

    Each object (in drawing order: far to near) has one box per part; ``rows[part]`` and ``cols[part]`` are
    ``[B, K]`` integer ``[start, stop)`` spans. ``object_slot`` is each object's palette slot (0 is the sky,
    1 the road), ``slot_class`` the class of each slot, ``horizon`` the (float) row where the road begins.
    """

    rows: list[tuple[Tensor, Tensor]]
    cols: list[tuple[Tensor, Tensor]]
    active: Tensor
    object_slot: Tensor
    palette: Tensor
    slot_class: Tensor
    horizon: Tensor


def _random_layout(keys: Tensor, height: int, width: int, spec: SceneSpec) -> _Layout:
    """Boxes, palette and horizon of random scenes."""
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
    rows = [_spans(bottom - body_h, bottom, height), _spans(bottom - body_h - top_h, bottom - body_h, height)]
    cols = [_spans(left, left + obj_width, width), _spans(left + inset, left + obj_width - inset, width)]
    # Slots 2..max_cars+1 are cars, the rest pedestrians: a lookup turns slots into classes.
    slot_class = torch.tensor([0, 1] + [2] * spec.max_cars + [3] * spec.max_pedestrians, dtype=torch.uint8, device=device)
    return _Layout(rows, cols, active > 0, slot.long() + 2, palette, slot_class, horizon)


def _notebook_layout(batch: int, height: int, width: int, device: torch.device) -> _Layout:
    """The seed notebook's fixed scene: sky, road, one car, one pedestrian (drawn in that order)."""

    def spans(*bounds: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        # Clipped to the image as a NumPy slice is; one column per object.
        clipped = [(min(start, size), max(min(stop, size), min(start, size))) for start, stop, size in bounds]
        start, stop = torch.tensor(clipped, device=device).T[:, None, :].expand(2, batch, len(bounds))
        return start, stop

    car_rows, car_cols = (height // 2, 3 * height // 4, height), (width // 4, 3 * width // 4, width)
    pedestrian_rows, pedestrian_cols = (height // 2 + 10, height // 2 + 40, height), (10, 25, width)
    palette = torch.tensor([SKY_COLOR, (ROAD_GRAY,) * 3, OBJECT_COLORS[2], OBJECT_COLORS[3]], dtype=torch.float64)
    return _Layout(
        rows=[spans(car_rows, pedestrian_rows)],
        cols=[spans(car_cols, pedestrian_cols)],
        active=torch.ones(batch, 2, dtype=torch.bool, device=device),
        object_slot=torch.tensor([[2, 3]], device=device).expand(batch, 2),
        palette=palette.to(device).expand(batch, 4, 3),
        slot_class=torch.arange(4, dtype=torch.uint8, device=device),
        horizon=torch.full((batch,), float(height // 2), dtype=torch.float64, device=device),
    )


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Draw on one CPU thread: the drawing ops are small and memory-bound, so OpenMP's fork/join costs more than
    a second thread gains, and far more when other processes share the cores."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _draw(layout: _Layout, keys: Tensor, height: int, width: int, noise_std: float) -> tuple[Tensor, Tensor]:
    """Images ``uint8[B,3,H,W]`` and class masks ``uint8[B,H,W]`` of a layout.

    Each pixel gets a bit for every box covering it: bit 0 for the sky (every pixel), bit 1 for the road (rows
    below the horizon), bit 2 + k for object k in drawing order. The highest bit is what is visible (the nearest
    object, else the road, else the sky), read off as the exponent of the bits converted to a float. Consecutive
    rows crossing the same boxes (a run) look alike, so the visible code and its colours are worked out for one
    row per run and copied to every row of the run; the sky's brightness ramp and the noise go on per pixel.
    Drawn in chunks of images that fit the caches, into int16 planes reused from chunk to chunk.
    """
    batch, device = keys.shape[0], keys.device
    cpu = device.type == "cpu"
    n_codes = layout.active.shape[1] + 2
    if n_codes <= 24:  # integers below 2**24 are exact in float32
        int_type, float_type, mantissa, bias = torch.int32, torch.float32, 23, 127
    else:  # below 2**53 in float64; SceneSpec allows at most _MAX_OBJECTS objects
        int_type, float_type, mantissa, bias = torch.int64, torch.float64, 52, 1023
    rows = torch.arange(height, device=device)
    below = (rows[None] >= layout.horizon[:, None]).to(int_type)
    one = torch.ones((), dtype=int_type, device=device)
    bits = torch.where(layout.active, one << torch.arange(2, n_codes, device=device, dtype=int_type), 0).to(int_type)
    row_bits = [_coverage(start, stop, bits, height) for start, stop in layout.rows]
    col_bits = [_coverage(start, stop, bits, width) for start, stop in layout.cols]
    row_bits[0] = row_bits[0] | 1 | (below << 1)
    col_bits[0] = col_bits[0] | 3

    # Runs of rows with equal bits: run[b, h] numbers them, run_rows[b, r] is the first row of run r.
    change = torch.zeros(batch, height - 1, dtype=torch.bool, device=device)
    for part in row_bits:
        change |= part[:, 1:] != part[:, :-1]
    run = torch.cat([torch.zeros(batch, 1, dtype=torch.long, device=device), change.cumsum(1)], dim=1)
    run_counts = (run[:, -1] + 1).tolist()
    run_rows = torch.zeros(batch, height, dtype=torch.long, device=device).scatter_reduce_(
        1, run, rows.expand(batch, height), "amin", include_self=False
    )
    row_bits = [part.gather(1, run_rows) for part in row_bits]

    # Per image and code (0 sky, 1 road, 2 + k object k): red, green, blue and is-sky planes; the class.
    code_slot = torch.cat([torch.tensor([[0, 1]], device=device).expand(batch, 2), layout.object_slot], dim=1)
    colors = layout.palette.round().clamp(0, 255).to(torch.int16)
    code_colors = colors.gather(1, code_slot[..., None].expand(batch, n_codes, 3)).permute(2, 0, 1)
    code_planes = torch.cat([code_colors, (code_slot == 0).to(torch.int16)[None]]).reshape(4, -1).contiguous()
    code_classes = layout.slot_class[code_slot].reshape(-1)
    # Turns a float's biased exponent into the index of image b's code in those tables.
    code_base = (torch.arange(batch, device=device, dtype=int_type) * n_codes - bias)[:, None, None]
    # The notebook's sky brightens by 50 in red from top to horizon (np.linspace(100, 150)).
    sky_rows = layout.horizon.ceil().clamp(min=2)
    ramp = (50.0 * rows[None].double() / (sky_rows[:, None] - 1)).floor().clamp(max=50).to(torch.int16)
    numel = 3 * height * width
    if noise_std > 0:
        windows = 8 * numel
        bank = _noise_bank(windows + numel, float(noise_std)).to(device)
        offsets = (uniform(keys, _STREAM_NOISE, 1)[:, 0] * windows).long().tolist()
        noise = bank.numpy() if cpu else bank

    images = torch.empty(batch, 3, height, width, dtype=torch.uint8, device=device)
    masks = torch.empty(batch, height, width, dtype=torch.uint8, device=device)
    chunk = max(1, min(batch, _CHUNK_PIXELS // (height * width)))
    run_planes_memory = torch.empty(4 * chunk * max(run_counts) * width, dtype=torch.int16, device=device)
    planes_memory = torch.empty(chunk, 4, height, width, dtype=torch.int16, device=device)
    plane_index = torch.arange(4, device=device)[None, :, None]
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        count, n_runs = stop - start, max(run_counts[start:stop])
        cover = None
        for part_rows, part_cols in zip(row_bits, col_bits):
            part = part_rows[start:stop, :n_runs, None] & part_cols[start:stop, None, :]
            cover = part if cover is None else cover.bitwise_or_(part)
        code = (cover.to(float_type).view(int_type) >> mantissa).add_(code_base[start:stop]).view(-1)
        run_planes = run_planes_memory[: 4 * code.numel()].view(4, -1)
        for plane in range(4):
            torch.index_select(code_planes[plane], 0, code, out=run_planes[plane])
        run_classes = code_classes.index_select(0, code).view(-1, width)
        # Every row of the chunk's images is a copy of its run's row.
        image_rows = torch.arange(count, device=device)[:, None] * n_runs + run[start:stop]
        plane_rows = plane_index * (count * n_runs) + image_rows[:, None, :]
        planes = planes_memory[:count]
        torch.index_select(run_planes.view(-1, width), 0, plane_rows.view(-1), out=planes.view(-1, width))
        torch.index_select(run_classes, 0, image_rows.view(-1), out=masks[start:stop].view(-1, width))
        rgb = planes[:, :3]
        rgb[:, 0].addcmul_(planes[:, 3], ramp[start:stop, :, None])
        if noise_std > 0:
            # One add per image (each reads its own window); NumPy's per-call cost is a fraction of torch's.
            for image, offset in zip(rgb.numpy() if cpu else rgb, offsets[start:stop]):
                image += noise[offset : offset + numel].reshape(image.shape)
        images[start:stop].copy_(rgb.clamp_(0, 255))
    return images, masks


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
    if batch == 0:
        return (
            torch.empty(0, 3, height, width, dtype=torch.uint8, device=keys.device),
            torch.empty(0, height, width, dtype=torch.uint8, device=keys.device),
        )
    with _one_thread(keys.device):
        if spec.layout == "notebook":
            layout = _notebook_layout(batch, height, width, keys.device)
        else:
            layout = _random_layout(keys, height, width, spec)
        return _draw(layout, keys, height, width, spec.noise_std)
