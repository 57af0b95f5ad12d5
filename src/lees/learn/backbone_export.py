"""Shipping a backbone from a training run's latest checkpoint: one command, ``lees backbone export``.

A run of ``lees backbone train`` keeps ``checkpoint.safetensors`` (model, EMA, optimiser) and
``checkpoint.json`` (step, time, settings) up to date while it trains. :func:`export_checkpoint`
turns the EMA weights of that checkpoint into the diffusers folder lees ships (``ClassFlowPipeline``
or ``DDPMPipeline``: ``transformer/`` or ``unet/`` + ``scheduler/`` + ``model_index.json``; weights in
half precision where they fit, see :func:`export_backbone`), with ``training.json``, a sample grid
and a README whose figures come from the checkpoint itself, so exporting the final checkpoint again
is the same command with nothing to fill in by hand.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..models.denoisers import num_classes
from ..utils.files import atomic_write_text
from .backbone_training import (
    BackboneTrainConfig,
    build_model,
    export_backbone,
    sample_grid,
    trained_pipeline,
    training_scheduler,
)


def read_checkpoint(run: str | Path, tries: int = 5) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``checkpoint.json`` and the EMA weights of ``checkpoint.safetensors`` in ``run``, of one and the
    same step (a training run may write a newer checkpoint while they are read: then read again)."""
    run = Path(run)
    if not (run / "checkpoint.json").is_file():
        raise FileNotFoundError(
            f"{run} holds no checkpoint.json: give the --out folder of lees backbone train"
        )
    for _ in range(tries):
        meta = json.loads((run / "checkpoint.json").read_text())
        tensors = load_file(run / "checkpoint.safetensors")
        if json.loads((run / "checkpoint.json").read_text())["step"] == meta["step"]:
            return meta, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    raise OSError(f"{run}'s checkpoint kept changing while it was read; try again")


def checkpoint_model(run: str | Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The EMA model of a run's latest checkpoint (fp32, eval mode), its noise scheduler, and the
    checkpoint's metadata (``step``, ``elapsed_s``, ``config``)."""
    meta, ema = read_checkpoint(run)
    config = BackboneTrainConfig.from_dict({"arch": "embedded", **meta["config"]})
    model = build_model(config)
    model.load_state_dict(ema)
    return model.eval(), training_scheduler(model), meta


def last_loss(run: Path, step: int) -> float | None:
    """The training loss logged at ``step`` (or the last one before it) in ``train_log.jsonl``."""
    log = run / "train_log.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    before = [r["loss"] for r in rows if r["step"] <= step]
    return before[-1] if before else None


def export_checkpoint(
    run: str | Path, out: str | Path, max_mb: float = 20.0, grid: int | None = None, device: str = "cpu"
) -> Path:
    """Export the EMA weights of ``run``'s latest checkpoint to the shippable folder ``out``.

    Args:
        run: a ``lees backbone train`` output folder (``checkpoint.json`` + ``checkpoint.safetensors``).
        out: the folder to write (``src/lees/embedded/dit`` for embedded-dit); files there are replaced.
        max_mb: weights are stored in fp16 if that keeps them within this many MB, else in fp32.
        grid: samples in ``out/samples.png`` (default: the run's ``--grid``; 0: no grid).
        device: where to sample the grid.

    Returns ``out``, holding the pipeline folder, ``training.json``, ``samples.png`` and ``README.md``.
    """
    run, out = Path(run), Path(out)
    model, scheduler, meta = checkpoint_model(run)
    config = BackboneTrainConfig.from_dict({"arch": "embedded", **meta["config"]})
    card = {
        "step": meta["step"],
        "elapsed_s": round(meta["elapsed_s"], 1),
        "loss": last_loss(run, meta["step"]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": config.to_dict(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"  # made with the usual permissions (a temporary folder's are 0700)
        trained_pipeline(model, scheduler).save_pretrained(folder)
        atomic_write_text(folder / "training.json", json.dumps(card, indent=1))
        export_backbone(folder, out, max_mb)
    count = config.grid if grid is None else grid
    if count > 0:
        sample_grid(model.to(device), scheduler, count, out / "samples.png", config, device)
    card = json.loads((out / "training.json").read_text())
    atomic_write_text(out / "README.md", readme(card, num_classes(model) is not None, count > 0))
    print(f"exported step {meta['step']} of {run} to {out}")
    return out


def readme(card: dict[str, Any], conditional: bool, grid: bool) -> str:
    """The README of an exported backbone folder: what it is and how it was made, from its card."""
    config = card["config"]
    loss = "" if card.get("loss") is None else f", training loss {card['loss']:.4f} at that step"
    sampled = (
        f"one row per class, 50 Euler steps, guidance scale {config['guidance_scale']}"
        if conditional
        else "DDPM, 50 steps"
    )
    lines = [
        f"# Backbone `{config['arch']}` ({'class-conditional, ' if conditional else ''}{config['data']})",
        "",
        "Exported with `lees backbone export` from a `lees backbone train` run's latest checkpoint "
        "(its EMA weights); `training.json` holds the figures below. A diffusers pipeline folder "
        f"({'`ClassFlowPipeline`: `transformer/`' if conditional else '`DDPMPipeline`: `unet/`'} + "
        "`scheduler/`): `lees.load_backbone(FOLDER)`, `--model FOLDER`.",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {card['parameters']:,} ({card.get('weights_dtype', 'float32')} safetensors, "
        "loaded as fp32) |",
        f"| steps, time | step {card['step']:,} of {config['train_steps']:,}, "
        f"{card['elapsed_s'] / 60:.1f} min of training{loss} |",
        f"| training | batch {config['batch_size']}, Adam lr {config['lr']} (warm-up {config['warmup']}), "
        f"EMA {config['ema_decay']}, seed {config['seed']}"
        + (f", labels dropped to the null class with p = {config['label_dropout']}" if conditional else "")
        + " |",
    ]
    if grid:
        lines += [f"| samples | `samples.png`: {sampled}, EMA weights |", "", "![samples](samples.png)"]
    lines += [
        "",
        "Made by (resumable; then export the checkpoint the run reached):",
        "",
        "```bash",
        f"lees backbone train --arch {config['arch']} --data {config['data']} --out runs/{config['arch']} "
        f"--train-steps {config['train_steps']} --batch-size {config['batch_size']} --lr {config['lr']} "
        f"--warmup {config['warmup']} --ema-decay {config['ema_decay']} --seed {config['seed']} "
        f"--checkpoint-every {config['checkpoint_every']} --grid {config['grid']} "
        f"--grid-every {config['grid_every']}"
        + (f" --guidance-scale {config['guidance_scale']}" if conditional else ""),
        f"lees backbone export --run runs/{config['arch']} --out THIS_FOLDER",
        "```",
        "",
    ]
    return "\n".join(lines)
