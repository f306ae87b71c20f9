"""Notebook exercise 4: torchvision's DeepLabV3-ResNet50 on a generated street scene, visualised.

    python scripts/deeplabv3_demo.py                                  # random init (nothing can be downloaded here)
    python scripts/deeplabv3_demo.py --weights ~/deeplabv3_resnet50_coco-cd0a2569.pth
    python scripts/deeplabv3_demo.py --weights COCO_WITH_VOC_LABELS_V1  # the file must be in the torch hub cache

The COCO weights predict the 21 Pascal VOC classes; the demo shows the input scene, its ground
truth (background, road, car, pedestrian), the predicted VOC classes with a legend, and the
IoU of VOC "car" against our cars and VOC "person" against our pedestrians.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import time
from pathlib import Path

import torch

from segsweep.data.scenes import CLASS_COLORS, CLASS_NAMES, SceneSpec, generate_scenes
from segsweep.models.nets.torchvision_models import DeepLabV3, DeepLabV3_ResNet50_Weights
from segsweep.runs.files import write_atomic

VOC_CLASSES = list(DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])
# Our class -> the VOC class that means the same thing.
VOC_MATCH = {"car": "car", "pedestrian": "person"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run torchvision's DeepLabV3-ResNet50 on a generated street scene and save an "
        "input / ground truth / prediction figure (notebook exercise 4). Nothing is ever downloaded.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="a local state-dict file (e.g. deeplabv3_resnet50_coco-cd0a2569.pth), or a torchvision weights name "
        "(COCO_WITH_VOC_LABELS_V1) whose file is in the torch hub cache; default: random initialisation",
    )
    parser.add_argument("--num-classes", type=int, default=len(VOC_CLASSES), help="classes of the head (21: Pascal VOC)")
    parser.add_argument("--size", type=int, default=256, help="scene height and width in pixels")
    parser.add_argument("--index", type=int, default=0, help="which generated scene (split 'predict')")
    parser.add_argument("--seed", type=int, default=0, help="scene data seed")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--output", type=Path, default=Path("outputs/deeplabv3_demo.png"), help="the figure (PNG)")
    return parser.parse_args(argv)


def class_names(num_classes: int) -> list[str]:
    if num_classes == len(VOC_CLASSES):
        return VOC_CLASSES
    if num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [f"class {i}" for i in range(num_classes)]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else math.nan


def figure_png(image: torch.Tensor, truth: torch.Tensor, prediction: torch.Tensor, names: list[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    palette = plt.get_cmap("tab20", 20)
    colors = [(0.0, 0.0, 0.0, 1.0)] + [palette(i % 20) for i in range(len(names) - 1)]
    truth_colors = ListedColormap([[c / 255 for c in color] for color in CLASS_COLORS])
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    try:
        axes[0].imshow(image.permute(1, 2, 0).numpy())
        axes[0].set_title("input scene")
        axes[1].imshow(truth.numpy(), cmap=truth_colors, vmin=0, vmax=len(CLASS_COLORS) - 1, interpolation="nearest")
        axes[1].set_title("ground truth")
        axes[2].imshow(prediction.numpy(), cmap=ListedColormap(colors), vmin=0, vmax=len(names) - 1, interpolation="nearest")
        axes[2].set_title("DeepLabV3 prediction")
        for ax in axes:
            ax.axis("off")
        counts = torch.bincount(prediction.flatten(), minlength=len(names))
        present = [i for i in counts.argsort(descending=True).tolist() if counts[i] > 0][:8]
        total = prediction.numel()
        axes[2].legend(
            handles=[Patch(color=colors[i], label=f"{names[i]} {100 * counts[i].item() / total:.1f}%") for i in present],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
        )
        axes[1].legend(
            handles=[Patch(color=truth_colors(i), label=name) for i, name in enumerate(CLASS_NAMES)],
            loc="lower center",
            bbox_to_anchor=(0.5, -0.18),
            ncol=4,
            fontsize=8,
        )
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.size < 16:
        print(f"error: --size must be >= 16, got {args.size}", file=sys.stderr)
        return 2
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device
    )
    if args.weights is None:
        print(
            "note: no pretrained weights: nothing can be downloaded on this machine, so DeepLabV3 starts from a random "
            "initialisation and its prediction is noise. Pass --weights PATH (a local deeplabv3_resnet50_coco-cd0a2569.pth) "
            "for the pretrained COCO model."
        )
    started = time.perf_counter()
    try:
        net = DeepLabV3(num_classes=args.num_classes, weights=args.weights).to(device).eval()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    images, truths = generate_scenes(SceneSpec(), args.seed, "predict", torch.tensor([args.index]), args.size)
    with torch.inference_mode():
        logits = net(images.to(device).float() / 255.0)
    prediction = logits.argmax(dim=1)[0].cpu()
    elapsed = time.perf_counter() - started
    names = class_names(args.num_classes)

    lines = []
    for ours, theirs in VOC_MATCH.items():
        if theirs in names:
            value = iou(prediction == names.index(theirs), truths[0] == CLASS_NAMES.index(ours))
            lines.append(f"IoU of VOC '{theirs}' vs scene '{ours}': {'n/a' if math.isnan(value) else f'{value:.3f}'}")
    weights = args.weights or "random init"
    title = f"DeepLabV3-ResNet50 ({weights}), scene {args.index} of seed {args.seed}, {args.size}x{args.size} px"
    write_atomic(args.output, lambda file: file.write(figure_png(images[0], truths[0], prediction, names, title)))
    for line in lines:
        print(line)
    print(f"model + inference: {elapsed:.1f} s on {device}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
