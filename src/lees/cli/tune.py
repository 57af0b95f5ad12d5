"""``lees tune``: every way to make a model sample faster, measured on it, and the winner saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_device, add_prompts, add_sampler, add_verdict_options, command, prompt_list

EPILOG = """examples:
  lees tune --model embedded --budget 0.6 --quick --out runs/tune-quick   # a look in minutes on 2 CPU cores
  lees tune --model path/to/pipeline --budgets 0.8 0.6 0.4 -n 256 --out runs/tune
  lees tune --model embedded --budget 0.5 --data fashion-mnist --out runs/tune   # fd_clf to the data too
  lees tune --model embedded-dit --guidance-scale 2 --budget 0.6 --quick --out runs/tune-dit
  lees tune --model embedded --steps 20 30 --quick -n 16 --out runs/tune-steps   # a winner per step count
  lees tune --model embedded-dit --guidance-scale 2 --sampler dpm++ --steps 20 --quick --out runs/tune-dpm
  lees tune --model embedded-dit --guidance-scale 2 --budget 0.6 --quick --reference ode --out runs/tune-ode
  lees tune --model embedded-dit --guidance-scale 2 --steps 30 --budgets 0.5 0.35 -n 16 --only euler@15 \
      --schedules runs/search-dit/schedule.json --out runs/tune-search   # a searched schedule (lees route)
  lees tune --model path/to/sd --prompts "a red car" "a cat on a sofa" --budget 0.6 --quick --out runs/tune-sd
  lees tune --model path/to/flux --prompts prompts.txt --height 512 --width 512 --out runs/tune-flux
(a text-to-image pipeline folder is sampled through its own call: the prompts, negative prompt, guidance,
 size and VAE as given, every candidate applied as lees.enable applies it, latency the whole call)
(the candidates: the full model at fewer steps with each solver of its family, uniform reuse and
 DeepCache at the reference steps, and diffusers' caches where they apply, each judged by fidelity to the
 full model from the same start noise (FD in feature space, PSNR, SSIM) and by latency measured in the
 same rounds; one verdict line per budget, the winner set against its runner with the paired bootstrap
 interval of their difference: above or below only where it excludes a tie. The first budget's winner
 goes to FOLDER/lees/policy.json for a model folder (OUT/policy.json for a built-in name):
 lees.enable(pipe, FOLDER) applies it and lees.tuned(FOLDER) gives its num_inference_steps. With several
 --steps, each count is tuned in OUT/steps-N and the winners share one policy file: each pipe() call runs
 its step count's winner. Run the same command again after an interruption: the pieces stored in
 OUT/pieces are not sampled again.)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "tune", run, "measure every way to sample a model faster; save the winner", EPILOG)
    p.add_argument(
        "--model", required=True,
        help="a diffusers pipeline folder (the policy is saved in its lees/), embedded or embedded-dit",
    )  # fmt: skip
    budgets = p.add_mutually_exclusive_group()
    budgets.add_argument(
        "--budget", type=float, help="latency budget: the share of the full model's time (0.6)"
    )
    budgets.add_argument(
        "--budgets", type=float, nargs="+", help="several budgets (the first one's winner is saved)"
    )
    p.add_argument("-n", type=int, default=None, help="samples per candidate (256; --quick: 64)")
    p.add_argument(
        "--steps", type=int, nargs="+", default=None,
        help="the full model's sampler steps (50; --quick: 20); several (20 30 50): a winner for each, "
        "in one policy that runs the call's step count's",
    )  # fmt: skip
    add_sampler(p, default=None, timesteps=False,
                help="the full model's solver (default: the one its folder names; euler for embedded-dit); "
                "every other solver of its family is measured at fewer steps beside it")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16, help="samples per timed round (16)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    p.add_argument(
        "--guidance-scale", type=float, default=None,
        help="classifier-free guidance: of a class-conditional model, e.g. 2 for embedded-dit (default 1: "
        "none); of a text-to-image pipeline (default: the pipeline's own)",
    )  # fmt: skip
    add_prompts(p)
    p.add_argument("--data", default=None, help="also fd_clf against this dataset (e.g. fashion-mnist)")
    p.add_argument("--quick", action="store_true", help="a look in minutes: few samples, few candidates")
    p.add_argument(
        "--router-train-steps",
        type=int,
        default=None,
        help="optimisation steps of each router (200; --quick: 100)",
    )
    p.add_argument(
        "--schedules", nargs="+", default=(), metavar="FILE",
        help="also these schedule files as candidates, named by folder (lees route --objective search's)",
    )  # fmt: skip
    p.add_argument(
        "--only", nargs="+", default=None, metavar="NAME",
        help="measure only these candidates, by their table names (e.g. euler@15 uniform-3); full always",
    )  # fmt: skip
    add_verdict_options(p)
    add_device(p)
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="folder (default: runs/tune)")


def run(args: argparse.Namespace) -> None:
    """Sample the model with every applicable way to be faster, from the same noise as the full model;
    print the measured table and one verdict per budget; save the frontier plot and the winner's policy."""
    from ..tune.tuner import TuneConfig, tune, tune_steps

    budgets = args.budgets or [args.budget if args.budget is not None else 0.6]
    keys = ("model", "n", "batch_size", "seed", "guidance_scale", "data", "quick", "device",
            "router_train_steps", "resamples", "reference", "negative_prompt", "height", "width", "schedules",
            "only", "sampler")  # fmt: skip
    config = TuneConfig(
        budgets=budgets, prompts=prompt_list(args.prompts), **{k: getattr(args, k) for k in keys}
    )
    also = " (and frontier-fd_clf.png beside it)" if args.data else ""
    if args.steps is None or len(args.steps) == 1:
        config.steps = args.steps[0] if args.steps else config.steps
        results = [tune(config, args.out)]
    else:
        results = tune_steps(config, args.steps, args.out)
    for result in results:
        pieces = result.table.parent / "pieces"
        print(f"wrote {result.table}, {result.plot}{also} and the samples in {pieces}")
