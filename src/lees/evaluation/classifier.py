"""The small classifier whose features give the fast offline Fréchet distance (``fd_clf``).

Inception FID runs at about 10 images/s on 2 CPU cores; this 3-layer CNN, trained on the same data
as the embedded model, embeds thousands of 32x32 images per second. Its 128-d pooled features are
to ``fd_clf`` what Inception's pool3 features are to FID: a different feature space, so its values
are not comparable to FID values, only to each other.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn
from tqdm.auto import tqdm

from ..models.data import load_images
from ..utils.files import atomic_write_bytes, atomic_write_text

CLASSIFIER_DIR = Path(__file__).parents[1] / "embedded" / "classifier"


CLASSIFIER_SHAPE = (1, 32, 32)  # the images the classifier (fd_clf's features) takes: C, H, W


class SmallCNN(nn.Module):
    """32x32 grayscale in [-1, 1] -> 128-d features -> class logits."""

    feature_dim = 128

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(model: SmallCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of ``images`` whose predicted class is the label."""
    model.eval()
    hits = sum(
        (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
        for i in range(0, len(images), batch_size)
    )
    return hits / len(images)


def train_classifier(
    out: str | Path, data: str = "fashion-mnist", epochs: int = 3, batch_size: int = 128, seed: int = 0
) -> dict:
    """Train the feature network on ``data``; write weights (safetensors) and a card with test accuracy."""
    x, y = load_images(data, "train")
    tx, ty = load_images(data, "test")
    torch.manual_seed(seed)
    model = SmallCNN(int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        bar = tqdm(range(0, len(x), batch_size), desc=f"classifier epoch {epoch + 1}/{epochs}", unit="batch")
        for i in bar:
            idx = order[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    card = {
        "data": data,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "num_classes": int(y.max()) + 1,
        "test_accuracy": accuracy(model, tx, ty),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(out)
    atomic_write_bytes(
        out / "model.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()})
    )
    atomic_write_text(out / "card.json", json.dumps(card, indent=1) + "\n")
    return card


def load_classifier(folder: str | Path = CLASSIFIER_DIR) -> SmallCNN:
    """The trained feature network (the committed one by default), in eval mode."""
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no classifier weights in {folder}; train them with `lees classifier train`")
    card = json.loads((folder / "card.json").read_text())
    model = SmallCNN(card["num_classes"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval()
