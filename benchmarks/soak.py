"""Soak: a pipeline with lees enabled, called as a server calls it, checked call by call against a fresh twin.

A tiny class-conditional DiT in lees' ``ClassFlowPipeline`` (flow matching, Euler) gets a tuned policy for
four step counts (``POLICY``: uniform reuse at 6, forecasting at 8, diffusers' FirstBlockCache through
the tune's glue at 10, DPM++ at 8 steps for a 12-step call), enabled with ``on_mismatch="full"``. Each
call draws its step count (in the policy's set or outside it), resolution, batch size and guidance
(batched, or split under cache contexts); now and then an exception is injected at a random denoiser
call (before the blocks, inside a block, after a block, or in the scheduler's step after the call), or
lees is disabled, or enabled again. Every call that returns is compared with its twin: the same
arguments on a fresh copy of the model, in a fresh pipeline, freshly enabled (or plain where lees is
disabled or the step count is not the policy's: on_mismatch="full" runs the pipeline's own scheduler in
full); they must be equal exactly. After each disable no hook may be left on any module and the
pipeline's scheduler must be its own. It prints the counts and the resident memory (VmRSS) at call 100
and at the end; the end must lie within 5 % of call 100. Then ``--process-twins`` of the calls (drawn
before the soak starts) are run again in a fresh Python process (a new model from the same seed, the
policy from the same folder) and must equal the soak's outputs exactly too.

    python benchmarks/soak.py [--calls 1000] [--seed 0] [--process-twins 20]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file, save_file

import lees
from lees.engine.actions import FORECAST
from lees.models.pipelines import ClassFlowPipeline
from lees.schedules.baselines import uniform_schedule
from lees.schedules.tuned import TunedPolicy, TunedScheduler, save_policies

POLICY_STEPS, OTHER_STEPS = (6, 8, 10, 12), (5, 7, 9)
SIZES, BATCHES, GUIDANCE = (8, 12, 16), (1, 2, 3), ("batched", "split")
POINTS = ("before", "in-block", "after-block", "after-call")


class Injected(RuntimeError):
    """The fault a soak call is broken off with."""


def tiny_dit() -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        sample_size=8, in_channels=1, out_channels=1, patch_size=2, num_layers=3, num_attention_heads=2,
        attention_head_dim=8, num_embeds_ada_norm=10, norm_type="ada_norm_zero",
    ).eval()  # fmt: skip


def save_policy(model: DiTTransformer2DModel, folder: Path) -> Path:
    """A tuned policy for 6, 8, 10 and 12 steps, one of each kind (as ``lees tune --steps`` saves one)."""
    blocks = lees.find_blocks(model)
    scheduler = FlowMatchEulerDiscreteScheduler()
    grid = {n: lees.pipeline_timesteps(scheduler, n) for n in POLICY_STEPS}
    fbc = {"method": "FirstBlockCache", "config": {"threshold": 0.5}, "calls": {"guidance": "batched"}}

    def policy(kind: str, name: str, solver: str, steps: int, reference: int, **what) -> TunedPolicy:
        return TunedPolicy(
            kind, name, solver, steps, reference={"solver": "euler", "steps": reference}, **what
        )

    return save_policies([
        policy("schedule", "uniform-2", "euler", 6, 6, schedule=uniform_schedule(blocks, grid[6], 2)),
        policy("schedule", "forecast-3", "euler", 8, 8,
               schedule=uniform_schedule(blocks, grid[8], 3, between=FORECAST)),
        policy("cache", "FirstBlockCache(threshold=0.5)", "euler", 10, 10, cache=fbc),
        policy("steps", "dpm++@8", "dpm++", 8, 12),
    ], folder)  # fmt: skip


def draw(rng: random.Random) -> dict:
    """One request: step count, resolution, batch size, guidance, seed."""
    steps = rng.choice(POLICY_STEPS) if rng.random() < 0.7 else rng.choice(OTHER_STEPS)
    return {"steps": steps, "size": rng.choice(SIZES), "batch": rng.choice(BATCHES),
            "guidance": rng.choice(GUIDANCE), "seed": rng.randrange(2**31)}  # fmt: skip


def call(pipe: ClassFlowPipeline, request: dict) -> torch.Tensor:
    gen = torch.Generator().manual_seed(request["seed"])
    n, size = request["batch"], request["size"]
    latents = torch.randn(n, 1, size, size, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    out = pipe(labels, guidance_scale=2.0, num_inference_steps=request["steps"], latents=latents,
               output_type="pt", guidance=request["guidance"])  # fmt: skip
    return out.images


def twin(pristine: DiTTransformer2DModel, folder: Path | None, request: dict) -> torch.Tensor:
    """The request on a fresh copy of the model in a fresh pipeline, freshly enabled (None: plain)."""
    pipe = quiet(ClassFlowPipeline(copy.deepcopy(pristine), FlowMatchEulerDiscreteScheduler()))
    if folder is not None:
        enable(pipe, folder)
    return call(pipe, request)


def quiet(pipe: ClassFlowPipeline) -> ClassFlowPipeline:
    pipe.set_progress_bar_config(disable=True)
    return pipe


def enable(pipe: ClassFlowPipeline, folder: Path) -> None:
    """``lees.enable(pipe, folder, on_mismatch="full")`` without its lines (one per policy)."""
    with contextlib.redirect_stdout(io.StringIO()):
        lees.enable(pipe, folder, on_mismatch="full")


class Faults:
    """Torch hooks that raise at one chosen denoiser call, at one point of it (``POINTS``): before the
    blocks, inside a block (its attention), after a block, or after the whole call (as a failing
    scheduler step or a client hanging up would)."""

    def __init__(self, model: DiTTransformer2DModel) -> None:
        self.at, self.calls = None, 0
        block = model.transformer_blocks[1]
        self.handles = [
            model.register_forward_pre_hook(lambda *a: self._maybe("before", count=True)),
            block.attn1.register_forward_hook(lambda *a: self._maybe("in-block")),
            block.register_forward_hook(lambda *a: self._maybe("after-block")),
            model.register_forward_hook(lambda *a: self._maybe("after-call")),
        ]

    def arm(self, point: str, call: int) -> None:
        self.at, self.calls = (point, call), 0

    def _maybe(self, point: str, count: bool = False) -> None:
        self.calls += count
        if self.at == (point, self.calls):
            self.at = None
            raise Injected(f"injected at denoiser call {self.calls}, {point}")

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def no_lees_left(pipe: ClassFlowPipeline) -> bool:
    """After a disable: no hook in any module's diffusers hook registry, and the pipeline's own scheduler.
    (An empty registry is no leftover: diffusers' own ``cache_context`` makes one on a plain model, as
    this pipeline's split guidance does while lees is disabled.)"""
    registries = [getattr(m, "_diffusers_hook", None) for m in pipe.transformer.modules()]
    hooked = [r for r in registries if r is not None and r.hooks]
    return not hooked and not isinstance(pipe.scheduler, TunedScheduler)


def soak(
    calls: int = 1000, seed: int = 0, report: Callable[[str], None] | None = None, process_twins: int = 0
) -> dict:
    """Run the soak; returns its counts (and raises AssertionError at the first wrong output); ``report``
    gets a progress line every 25 calls; ``process_twins`` calls are checked in a fresh process too."""
    rng = random.Random(seed)
    kept = set(random.Random(seed + 1).sample(range(1, calls + 1), min(process_twins, calls)))
    saved: dict[str, tuple[dict, bool, torch.Tensor]] = {}
    pristine = tiny_dit()
    model = copy.deepcopy(pristine)
    folder = Path(tempfile.mkdtemp(prefix="lees-soak-"))
    save_policy(model, folder)
    pipe = quiet(ClassFlowPipeline(model, FlowMatchEulerDiscreteScheduler()))
    faults = Faults(model)
    counts = dict(calls=0, equal=0, tuned=0, mismatched=0, plain=0, faults=0, disables=0, enables=1)
    warnings.simplefilter("ignore")  # on_mismatch="full" warns once per step count: counted, not shown
    enable(pipe, folder)
    enabled, memory, start = True, {}, time.perf_counter()
    for i in range(1, calls + 1):
        if i == min(101, calls):  # after the first 100 calls
            memory["at_100"] = rss_mib()
        roll = rng.random()
        if enabled and roll < 0.03:
            lees.disable(pipe)
            enabled, counts["disables"] = False, counts["disables"] + 1
            assert no_lees_left(pipe), f"call {i}: a hook or the tuned scheduler left after disable"
        elif not enabled and roll < 0.3:
            enable(pipe, folder)
            enabled, counts["enables"] = True, counts["enables"] + 1
        request = draw(rng)
        if rng.random() < 0.08:
            point = rng.choice(POINTS)
            faults.arm(point, rng.randint(1, request["steps"] * (2 if request["guidance"] == "split" else 1)))
        try:
            output = call(pipe, request)
        except Injected:
            counts["faults"] += 1
            continue
        finally:
            faults.at = None  # a fault that did not fire (fewer calls, or its block reused): a plain call
        counts["calls"] += 1
        fitted = enabled and request["steps"] in POLICY_STEPS
        counts["tuned" if fitted else "mismatched" if enabled else "plain"] += 1
        expected = twin(pristine, folder if enabled else None, request)
        if not torch.equal(output, expected):
            raise AssertionError(
                f"call {i} {request}: differs from its fresh twin by {(output - expected).abs().max():g}"
            )
        counts["equal"] += 1
        if i in kept:
            saved[str(i)] = (request, enabled, output)
        if report is not None and i % 25 == 0:
            report(f"call {i}: {counts}, {rss_mib():.1f} MiB, {time.perf_counter() - start:.0f} s")
    memory["at_end"] = rss_mib()
    lees.disable(pipe)
    assert no_lees_left(pipe)
    faults.remove()
    counts["seconds"] = round(time.perf_counter() - start, 1)
    counts["process_twins"], counts["process_equal"] = len(saved), in_fresh_process(saved, folder)
    return {**counts, **memory}


def in_fresh_process(saved: dict[str, tuple[dict, bool, torch.Tensor]], folder: Path) -> int:
    """Run the ``saved`` calls again in a new Python process (``--twins-in``); how many equal exactly."""
    if not saved:
        return 0
    (folder / "requests.json").write_text(json.dumps({k: [r, e] for k, (r, e, _) in saved.items()}))
    threads = str(torch.get_num_threads())  # the same: another count may round sums differently
    subprocess.run([sys.executable, __file__, "--twins-in", str(folder), "--threads", threads], check=True)
    twins = load_file(folder / "twins.safetensors")
    return sum(torch.equal(output, twins[k]) for k, (_, _, output) in saved.items())


def twins_in(folder: Path, threads: int) -> None:
    """In a fresh process: each request of ``folder/requests.json`` on a fresh twin (enabled with the
    policy in ``folder`` where the soak had lees enabled), saved to ``folder/twins.safetensors``."""
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    requests = json.loads((folder / "requests.json").read_text())
    pristine = tiny_dit()
    outputs = {k: twin(pristine, folder if on else None, r).contiguous() for k, (r, on) in requests.items()}
    save_file(outputs, folder / "twins.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="pipeline calls (1000)")
    parser.add_argument("--seed", type=int, default=0, help="the draws' seed (0)")
    parser.add_argument("--process-twins", type=int, default=20, help="calls re-run in a fresh process (20)")
    parser.add_argument("--twins-in", type=Path, default=None, help=argparse.SUPPRESS)  # the fresh process
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = parser.parse_args()
    if args.twins_in is not None:
        twins_in(args.twins_in, args.threads)
        return
    torch.set_num_threads(args.threads)
    result = soak(
        args.calls, args.seed, lambda line: print(line, file=sys.stderr, flush=True), args.process_twins
    )
    flat = abs(result["at_end"] / result["at_100"] - 1)
    print(
        f"calls {result['calls']} returned + {result['faults']} broken off by an injected exception "
        f"(of {args.calls} drawn), {result['disables']} disables, {result['enables']} enables"
    )
    print(
        f"tuned runs {result['tuned']}, mismatches handled (on_mismatch='full': plain) "
        f"{result['mismatched']}, "
        f"plain while disabled {result['plain']}"
    )
    print(f"outputs equal to their fresh twin: {result['equal']} of {result['calls']}")
    print(
        f"outputs equal to their twin in a fresh process: {result['process_equal']} of "
        f"{result['process_twins']} (drawn before the soak; broken-off calls have none)"
    )
    print(
        f"resident memory: {result['at_100']:.1f} MiB at call 100, {result['at_end']:.1f} MiB at the end "
        f"({100 * flat:.2f} % apart; flat within 5 %: {flat <= 0.05}); {result['seconds']} s"
    )


if __name__ == "__main__":
    main()
