"""How fd_clf, Inception FID and KID respond to known changes of real images (issue 16, item 2).

N real Fashion-MNIST test images (15 a class at N = 150), changed in a known way, are scored
against real training images (fd_clf: 10,000 of them; Inception: 2,000, both cached). Changes,
each at severities 1..5 (severity 0 = the clean images, the floor every ratio is taken to):

* ``darken`` x - c, ``dim`` x * c (a contrast cut towards black: the garment darkens, the black
  background stays), ``blur`` a Gaussian of sigma c pixels, ``noise`` x + N(0, c^2); in [0, 1]
  pixel units, clipped. The corruption module's ``brightness`` and ``contrast`` cover brighter and
  flatter (about each image's mean); these cover darker, which is how the drop schedules' samples
  differ.
* every function of ``lees.evaluation.corruptions`` at its CIFAR-10-C severities 1..5;
* ``classes``: N clean images from 10 - severity classes only (a seeded order of the classes),
  spread evenly over those left;
* ``clean-redraw``: N other clean images (severity 0), to show how far the floor moves by chance.

Prints one JSON line per point (fd_clf, fid, kid_clf, kid_fid, and fd_clf and fid over their clean
floors) and appends it to OUT/metric-response.jsonl as it is done, so a run picks up where an
interrupted one stopped; every change is measured at severity 3, then 5, 1, 2, 4. Then prints a
markdown table (severities 0, 3, 5) and draws OUT/metric-response.png (one panel per change, each
metric over its floor). The main run scores the classifier's raw features (``fd_clf_raw``, fd_clf's
definition before 2026-11-27, when this run was made); ``--clf-variants`` (classifier only, a minute)
scores fd_clf as it is now (features scaled to one length) and fd_clf_raw at every point into
OUT/clf-variants.jsonl, and the table and plot take both from there.

    python benchmarks/metric_response.py --out docs/results/metric-response   # ~35-60 min on 1 core
    python benchmarks/metric_response.py --clf-variants --out docs/results/metric-response
    python benchmarks/metric_response.py --plot-only --out docs/results/metric-response
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lees.evaluation.corruptions import CORRUPTIONS, corrupt
from lees.evaluation.metrics import (
    ClassifierFeatures,
    InceptionFeatures,
    fd,
    features,
    gaussian,
    inception_path,
    kid,
    reference_features,
)
from lees.models.data import load_images
from lees.utils.files import atomic_write_text

CLASSES = 10
INCEPTION_REFERENCE = 2000  # real training images behind FID and KID in Inception features
CLF_REFERENCE = 10_000  # as every fd_clf of the reports


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius 3 sigma), black beyond the border as the images' padding is."""
    r = math.ceil(3 * sigma)
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = F.conv2d(flat, g.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(flat, g.view(1, 1, -1, 1), padding=(r, 0)).reshape(n, c, h, w)


SHIFTS: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], tuple[float, ...]]] = {
    "darken": (lambda x, c: x - c, (0.05, 0.1, 0.15, 0.2, 0.3)),
    "dim": (lambda x, c: x * c, (0.9, 0.8, 0.7, 0.6, 0.5)),
    "blur": (_blur, (0.5, 0.75, 1.0, 1.5, 2.0)),
    "noise": (lambda x, c: x + c * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)),
              (0.05, 0.1, 0.2, 0.3, 0.5)),
}  # fmt: skip


def shift(images: torch.Tensor, name: str, severity: int) -> torch.Tensor:
    """``images`` ([-1, 1]) changed by one of SHIFTS at severity 1..5, in [0, 1] units, clipped."""
    fn, levels = SHIFTS[name]
    return fn((images + 1) / 2, levels[severity - 1]).clamp(0, 1) * 2 - 1


def balanced(labels: torch.Tensor, classes: list[int], n: int, skip: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` images spread evenly over ``classes``, from a seeded order within each class
    (the same whichever classes are drawn), leaving out each class's first ``skip`` (so two draws can
    be disjoint)."""
    picked = []
    for i, k in enumerate(classes):
        members = np.flatnonzero(labels.numpy() == k)
        rng = np.random.default_rng([seed, k])
        count = n // len(classes) + (i < n % len(classes))
        if skip + count > len(members):
            raise ValueError(f"class {k} has {len(members)} test images, fewer than {skip + count} needed")
        picked.append(rng.permutation(members)[skip : skip + count])
    return torch.from_numpy(np.concatenate(picked))


ORDER = (3, 5, 1, 2, 4)  # every change at severity 3 first, so an interrupted run has covered them all


def points() -> list[tuple[str, int]]:
    """Every (change, severity) measured: the floor first, then each severity of ORDER for every change."""
    changes = ("classes", *SHIFTS, *CORRUPTIONS)
    return [("clean", 0), ("clean-redraw", 0)] + [(change, s) for s in ORDER for change in changes]


def images_for(change: str, severity: int, images, labels, n: int, seed: int) -> torch.Tensor:
    """The N images of one point."""
    order = np.random.default_rng(seed).permutation(CLASSES).tolist()
    if change == "classes":
        return images[balanced(labels, order[severity:], n, 0, seed)]
    clean = images[balanced(labels, order, n, 0, seed)]
    if change == "clean":
        return clean
    if change == "clean-redraw":
        return images[balanced(labels, order, n, n // CLASSES + 1, seed)]
    if change in SHIFTS:
        return shift(clean, change, severity)
    return corrupt(clean, change, severity, seed)


def fd_few(feats: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """The Fréchet distance of ``feats`` (N samples) to a Gaussian, through an N x N matrix.

    With S1 = A^T A (A: the centred features over sqrt(N - 1)), the non-zero eigenvalues of S1 S2
    are those of A S2 A^T, so Tr (S1 S2)^1/2 = sum sqrt(eig(A S2 A^T)): exact, and a fraction of a
    second where ``scipy.linalg.sqrtm`` of the 2048 x 2048 product takes 20-30 s a point here.
    """
    a = (feats - feats.mean(0)) / np.sqrt(len(feats) - 1)
    root = np.sqrt(np.linalg.eigvalsh(a @ sigma @ a.T).clip(0)).sum()
    diff = feats.mean(0) - mu
    return float(diff @ diff + (a * a).sum() + np.trace(sigma) - 2 * root)


class Scorer:
    """fd_clf, FID and KID of image sets against the cached real-image references."""

    def __init__(self, device: str) -> None:
        inception_path()  # a one-line error when the weights are not installed
        self.extractors = {"clf": ClassifierFeatures(device, raw=True), "fid": InceptionFeatures(device)}
        self.references = {
            "clf": reference_features(self.extractors["clf"], n=CLF_REFERENCE, progress=False),
            "fid": reference_features(self.extractors["fid"], n=INCEPTION_REFERENCE, progress=False),
        }
        self.gaussians = {name: gaussian(ref) for name, ref in self.references.items()}

    def __call__(self, images: torch.Tensor, check: bool = False) -> dict[str, float]:
        """fd_clf_raw, fid, kid_clf_raw, kid_fid; with ``check`` also both FDs as
        ``lees.evaluation.metrics.fd`` gives them."""
        row = {}
        for name, extractor in self.extractors.items():
            feats, ref = features(extractor, images), self.references[name]
            key = "fd_clf_raw" if name == "clf" else "fid"
            row[key] = round(fd_few(feats, *self.gaussians[name]), 3)
            row[f"kid_{name}_raw" if name == "clf" else f"kid_{name}"] = round(kid(feats, ref)[0], 5)
            if check:
                row[f"{key}_sqrtm"] = round(fd(feats, ref), 3)
        return row


def run(out: Path, n: int, seed: int, device: str) -> list[dict]:
    """Measure every point not yet in OUT/metric-response.jsonl, appending each as it is done."""
    path = out / "metric-response.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    if any((r["n"], r["seed"]) != (n, seed) for r in rows):
        raise ValueError(f"{path} holds another run (other -n or --seed); delete it to start over")
    done = {(r["change"], r["severity"]) for r in rows}
    images, labels = load_images("fashion-mnist", "test")
    scorer = Scorer(device)
    for change, severity in points():
        if (change, severity) in done:
            continue
        started = time.perf_counter()
        row = {"change": change, "severity": severity, "n": n, "seed": seed}
        row |= scorer(images_for(change, severity, images, labels, n, seed), check=change == "clean")
        floor = rows[0] if rows else row
        row |= {"fd_clf_raw_ratio": round(row["fd_clf_raw"] / floor["fd_clf_raw"], 3),
                "fid_ratio": round(row["fid"] / floor["fid"], 3),
                "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


CLF_VARIANTS = {"fd_clf": {}, "fd_clf_raw": {"raw": True}}
"""fd_clf as it is (features scaled to one length) and on the raw features (its first definition)."""


def clf_variants(out: Path, n: int, seed: int, device: str) -> list[dict]:
    """fd_clf and fd_clf_raw at every point (classifier only: a minute), written to
    OUT/clf-variants.jsonl."""
    images, labels = load_images("fashion-mnist", "test")
    extractors = {name: ClassifierFeatures(device, **kw) for name, kw in CLF_VARIANTS.items()}
    gaussians = {
        name: gaussian(reference_features(e, n=CLF_REFERENCE, progress=False))
        for name, e in extractors.items()
    }
    rows = []
    for change, severity in points():
        changed = images_for(change, severity, images, labels, n, seed)
        row = {"change": change, "severity": severity, "n": n, "seed": seed}
        row |= {
            name: round(fd_few(features(e, changed), *gaussians[name]), 4) for name, e in extractors.items()
        }
        row |= {
            f"{name}_ratio": round(row[name] / (rows[0] if rows else row)[name], 3) for name in CLF_VARIANTS
        }
        rows.append(row)
    atomic_write_text(out / "clf-variants.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def table(rows: list[dict], variants: list[dict]) -> str:
    """Markdown: the floors, then every change at severity 3 and at 5 ordered by FID's excess over its
    floor, then the other class-loss points; each metric as a ratio to its clean floor, and KID."""
    clf = {(v["change"], v["severity"]): v for v in variants}
    nan = {"fd_clf_ratio": float("nan"), "fd_clf_raw_ratio": float("nan")}
    head = ("change", "severity", "fd_clf / floor", "fd_clf_raw (raw features) / floor",
            "Inception FID / floor", "FID - floor", "KID (Inception) x 1000")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    group = {0: 0, 3: 1, 5: 2}
    shown = [r for r in rows if r["severity"] in group or r["change"] == "classes"]
    for r in sorted(shown, key=lambda r: (group.get(r["severity"], 3), r["fid"])):
        v = clf.get((r["change"], r["severity"]), nan)
        cells = (r["change"], r["severity"], f"{v['fd_clf_ratio']:.2f}", f"{v['fd_clf_raw_ratio']:.2f}",
                 f"{r['fid_ratio']:.3f}",
                 f"{r['fid'] - rows[0]['fid']:+.1f}", f"{1000 * r['kid_fid']:.2f}")  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


TITLES = {"classes": "classes missing (severity: how many)"} | {
    name: f"{name}, c = {', '.join(map(str, levels))}" for name, (_, levels) in SHIFTS.items()
}


def plot(out: Path, rows: list[dict], variants: list[dict]) -> Path:
    """One panel per change: severity against fd_clf, fd_clf_raw (both from ``variants``, where every
    severity has been measured) and FID over their clean floors (log scale)."""
    from lees.reporting.plots import plt, save_figure

    floor = rows[0]
    changes = list(dict.fromkeys(r["change"] for r in variants if r["severity"] > 0))
    cols, lines = 4, math.ceil(len(changes) / 4)
    fig, axes = plt.subplots(lines, cols, figsize=(12, 2.2 * lines + 1), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")  # fmt: skip
    dots, dashes = {"marker": "o", "ms": 3}, {"ls": "--", "color": "grey"}
    series = (("fd_clf", variants, "fd_clf_ratio", dots), ("Inception FID", rows, "fid_ratio", dots),
              ("fd_clf_raw: raw features (fd_clf before 2026-11-27)", variants, "fd_clf_raw_ratio",
               dashes))  # fmt: skip
    for ax, change in zip(axes.flat, changes, strict=False):
        for label, source, key, style in series:
            part = sorted(
                (r for r in source if r["change"] in ("clean", change)), key=lambda r: r["severity"]
            )
            if part:
                ax.plot([r["severity"] for r in part], [r[key] for r in part], label=label, **style)
        ax.set_title(TITLES.get(change, change), fontsize=9)
        ax.set_yscale("log")
        ax.axhline(1, color="grey", lw=0.5)
        ax.grid(alpha=0.3, which="both")
    for ax in axes.flat[len(changes) :]:
        ax.axis("off")
    redraw = next(r for r in rows if r["change"] == "clean-redraw")
    clf_redraw = next(r for r in variants if r["change"] == "clean-redraw")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=9)
    for column in axes.T:  # the lowest panel in use of each column carries the severity axis
        lowest = [ax for ax in column if ax.axison][-1]
        lowest.set_xlabel("severity (0: clean)", fontsize=8)
        lowest.tick_params(labelbottom=True)
    fig.supylabel("metric / its value on the clean images")
    fig.suptitle(
        f"Response to known changes of {floor['n']} real Fashion-MNIST test images; floors fd_clf "
        f"{variants[0]['fd_clf']:.2f}, FID {floor['fid']:.1f} (another clean draw: "
        f"{clf_redraw['fd_clf_ratio']:.2f}x, {redraw['fid_ratio']:.2f}x)",
        fontsize=10,
    )
    return save_figure(fig, out / "metric-response.png")


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file ([] when there is none)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=150, help="images per point (150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/metric-response"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot and table from OUT's rows")
    parser.add_argument(
        "--clf-variants",
        action="store_true",
        help="only fd_clf and fd_clf_raw (classifier features scaled or raw): OUT/clf-variants.jsonl",
    )
    args = parser.parse_args()
    if args.n < CLASSES * 2:
        raise ValueError(f"-n must be at least {CLASSES * 2} (two images a class)")
    if args.clf_variants:
        for row in clf_variants(args.out, args.n, args.seed, args.device):
            print(json.dumps(row))
        return
    rows = (
        read_jsonl(args.out / "metric-response.jsonl")
        if args.plot_only
        else run(args.out, args.n, args.seed, args.device)
    )
    if not rows:
        raise ValueError(f"{args.out / 'metric-response.jsonl'} holds no rows: run without --plot-only first")
    variants = read_jsonl(args.out / "clf-variants.jsonl")
    print(table(rows, variants))
    print(f"# wrote {plot(args.out, rows, variants)} and {args.out / 'metric-response.jsonl'}")


if __name__ == "__main__":
    main()
