"""Fine-tuning throughput against the hardware's limit on the same work.

The limit: forward, backward and an optimiser step of the same network on tensors already
decoded, cropped and stacked in memory (the same batch size, memory format, trained stages and
optimiser), nothing else. The loop: ``headstart``'s fine-tuning on real photos (decoded pixels
from a warm cache, augmentation, loss, schedule, callbacks), timed over its training steps
(validation is left out: it is measured by ``benchmarks/feature_speed.py``'s forward pass).
Both at the full input size and at the smaller training size the plan can choose. It prints
images per second and their ratio (the bar: at least 0.8); it does not assert.

Usage: python benchmarks/train_speed.py [--data ../shared/data/trashnet/train] [--steps 12]
       [--sizes 224,160] [--freeze 4]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from headstart.classifier import Classifier, new_head
from headstart.data import discover
from headstart.data.augment import AugmentSettings, build_augmentation
from headstart.inputs import InputPipeline, to_tensor
from headstart.models import create_backbone
from headstart.training.callbacks import Callback, StopTraining, TrainingStep
from headstart.training.finetune import FineTuneSettings, fine_tune, training_crop
from headstart.training.freezing import parameter_groups, train_mode
from headstart.training.optim import create_optimizer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trashnet" / "train"


class Clock(Callback):
    def __init__(self, steps: int):
        self.steps, self.times = steps, []

    def on_batch_end(self, step: TrainingStep) -> None:
        self.times.append(time.perf_counter())
        if step.step >= self.steps:
            raise StopTraining("timed")


def loop_throughput(network, examples, images, inputs, settings, steps: int) -> float:
    clock = Clock(steps)
    fine_tune(copy.deepcopy(network), examples, [], images, inputs, settings, callbacks=[clock])
    gaps = np.diff(clock.times[1:])  # the first step allocates the optimiser's state
    return settings.batch_size / float(np.median(gaps))


def limit_throughput(network, pixels, inputs, settings, steps: int) -> float:
    """The same steps on tensors made once: the cost of the arithmetic alone."""
    model = copy.deepcopy(network).to(memory_format=torch.channels_last)
    groups = parameter_groups(model, settings)
    optimizer = create_optimizer(groups, settings.optimizer, weight_decay=settings.weight_decay)
    height, width = training_crop(inputs, settings)
    augment = build_augmentation(height, width, AugmentSettings("none"))
    batch = torch.stack([augment(to_tensor(p)) for p in pixels[: settings.batch_size]])
    labels = torch.zeros(len(batch), dtype=torch.long)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    train_mode(model, settings)
    times = []
    for _ in range(steps):
        loss = loss_fn(model(batch), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter())
    return settings.batch_size / float(np.median(np.diff(times[1:])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--sizes", default="224,160", help="training crop sides")
    parser.add_argument("--freeze", default="4", help="bottom stages frozen (or none, all)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("HEADSTART_CACHE", tempfile.mkdtemp(prefix="train-speed-"))
    cache = Path(os.environ["HEADSTART_CACHE"])
    torch.manual_seed(0)
    backbone, preprocessing, _ = create_backbone("efficientnet_lite0")
    dataset = discover(args.data, val_fraction=0.0)
    classes = dataset.classes
    index = {name: i for i, name in enumerate(classes)}
    needed = (args.steps + 1) * args.batch_size
    examples = [(s.path, index[s.label]) for s in dataset.samples][:needed]
    inputs = InputPipeline(preprocessing)
    images = inputs.decoder(cache / "pixels")
    pixels = [images.get(path) for path, _ in examples]  # decoded once: the cache is warm
    head = new_head(backbone.num_features, [1] * len(classes))
    network = Classifier(backbone, head, preprocessing)
    freeze = int(args.freeze) if args.freeze.isdigit() else args.freeze
    print(f"{len(examples)} photos from {args.data}; {torch.get_num_threads()} threads")
    print(f"{'train size':>10} {'limit img/s':>12} {'loop img/s':>11} {'ratio':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        settings = FineTuneSettings(
            batch_size=args.batch_size,
            freeze=freeze,
            train_size=None if size == inputs.crop_size[0] else size,
        )
        limit = limit_throughput(network, pixels, inputs, settings, args.steps)
        loop = loop_throughput(network, examples, images, inputs, settings, args.steps)
        print(f"{size:>10} {limit:>12.1f} {loop:>11.1f} {loop / limit:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
