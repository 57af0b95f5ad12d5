"""Ship the searched DiT schedules as tuned-policy folders under src/lees/embedded/ (issue 34, item 7).

Each folder gets the policy file ``lees.enable(pipe, folder)`` applies to
``ClassFlowPipeline.from_pretrained(lees.EMBEDDED_DIT_DIR)`` (run with ``pipe(**lees.tuned(folder))``):
the searched table on its solver and steps, the reference it was measured against, and every row of the
evaluation that measured it (``tune-1000/tune.json``), plus the table's map.

    PYTHONPATH=src python docs/results/learned-dit/ship.py [--tune tune-1000] [--pairs pairs-1000.txt]
        [--rows search-0.50=0.5 search-0.35=0.35]

Each row NAME=BUDGET (the searched table in NAME/schedule.json) is shipped as ``dit-search-BUDGET`` (for
the Euler reference; ``dit-search-dpm-BUDGET`` for DPM-Solver++'s, whichever solver the table itself runs:
``lees route --reference-run``); its
README quotes the evaluation's rows near the budget and the head-to-head lines of ``--pairs`` about it.
"""

import argparse
import json
import shutil
from pathlib import Path

import lees
from lees.schedules.tuned import TunedPolicy, save_policies

HERE = Path(__file__).parent
EMBEDDED = Path(lees.__file__).parent / "embedded"


def _row(name: str, row: dict) -> str:
    """One measured row as a table line: latency, FD to the full model, PSNR and fd_clf with intervals."""

    def cell(key: str, digits: str) -> str:
        low, high = row.get(f"{key}_interval") or (None, None)
        interval = f" [{low:{digits}}, {high:{digits}}]" if low is not None else ""
        return f"{row[key]:{digits}}{interval}" if row.get(key) is not None else "-"

    return (
        f"| {name} | {row['latency_ratio']:.2f}x | {cell('fd_full', '.3g')} | {cell('psnr', '.1f')} | "
        f"{cell('fd_clf', '.2f')} |"
    )


def shipped_name(solver: str, budget: float) -> str:
    """The shipped folder's name: dit-search-BUDGET on Euler, dit-search-SOLVER-BUDGET on another."""
    return (
        f"dit-search-{budget:.2f}"
        if solver == "euler"
        else f"dit-search-{solver.replace('+', '')}-{budget:.2f}"
    )


def _command(budget: float, st: dict) -> str:
    """The ``lees route`` command that searched the table, from its stored settings."""
    extra = "" if st.get("reference", "run") == "run" else f" --reference {st['reference']}"
    extra += f" --data {st['guard_data']}" if st.get("guard_data") else ""
    extra += f" --schedule {st['start']}" if st.get("start") else ""
    extra += f" --reference-run {st['reference_run']}" if st.get("reference_run") else ""
    extra += f" --guard-weight {st['guard_weight']:g}" if st.get("guard_weight", 50.0) != 50.0 else ""
    extra += f" --fd-weight {st['fd_weight']:g}" if st.get("fd_weight") else ""
    extra += f" --batch-size {st['timing_batch']}" if st.get("timing_batch") else ""
    return (
        f"lees route --model embedded-dit --sampler {st['sampler']} --steps {st['steps']} --guidance-scale 2 "
        "--objective search\n"
        f"--target-latency-ratio {budget:g} --trajectories {st.get('samples')} --max-rollouts "
        f"{st.get('max_rollouts')}{extra}"
    )


def readme(
    name: str, budget: float, schedule, measured: dict, config: dict, pairs: list[str], alone: list[str]
) -> str:
    """The folder's README: what it is, how it was made, how to apply it, and its measured rows beside the
    others of the same evaluation within the budget (and the full model)."""
    st = schedule.settings
    near = sorted((r for r in measured.items() if r[1]["latency_ratio"] <= budget + 0.05 or r[0] == "full"),
                  key=lambda r: r[1]["latency_ratio"])  # fmt: skip
    rows = "\n".join(_row(n, r) for n, r in near)
    moves = ", ".join(st.get("moves", [])[1:]) or "none"
    samples, rollouts, out = st.get("samples"), st.get("rollouts"), config.get("out", "tune-1000")
    start, end, modelled = st.get("start_psnr", 0), st.get("train_psnr", 0), st.get("latency_ratio", 0)
    scored = st.get("objective", "").removeprefix("search: ")
    shipped = shipped_name(against(st)[0], budget)
    begun = st.get("start") or "the best uniform table"
    timing = ""
    if len(alone) > 1:
        quoted = "\n".join(alone[1:])
        timing = (
            "Added to a stored evaluation, this row's timed rounds pair with the full model's rounds of an\n"
            "earlier session; timed again in one session, each table and the full model sampled alone in\n"
            f"turning rounds (`docs/results/learned-dit/{alone[0]}`):\n\n```\n{quoted}\n```\n\n"
        )
    words = {"euler": "Euler", "dpm++": "DPM-Solver++", "unipc": "UniPC"}
    solver, (ref, ref_steps) = words.get(st["sampler"], st["sampler"]), against(st)
    ref = words.get(ref, ref)
    of = "" if not st.get("reference_run") else f" of the full model with {ref} at {ref_steps} steps"
    return f"""# `{shipped}`: a run / reuse / forecast schedule searched by rollouts

{solver} at {st["steps"]} steps, guidance scale 2, latency budget {budget:g}{of}. A tuned policy for
`embedded-dit` (`policy.json`, the table in `tuned-schedule.json`, drawn in `schedule.png`): per
transformer block and {solver} step, run, reuse the block's last residual, or forecast it (order
{schedule.forecast_order}) from its last runs. Apply it as any tuned policy:

```python
import lees
from lees.models.pipelines import ClassFlowPipeline

folder = lees.EMBEDDED_DIR / "{shipped}"
pipe = ClassFlowPipeline.from_pretrained(lees.EMBEDDED_DIT_DIR)
lees.enable(pipe, folder)
images = pipe(class_labels=[0, 1, 2, 3], guidance_scale=2.0, **lees.tuned(folder))
```

## How it was made

`{_command(budget, st)}`
(docs/results/learned-dit/README.md; the search's output and state in docs/results/learned-dit/{name}):
each candidate table scored by {scored}, on {samples} training samples (seed 9001, no evaluation's),
each action's latency timed; {rollouts} rollouts, training score from {start:.2f} to {end:.2f} dB,
modelled latency {modelled:.3f}; moves after the start ({begun}): {moves}.

## Measured

`docs/results/learned-dit/{out}`: `lees tune` with every row from the same noise and labels,
{config.get("n")} samples on seed {config.get("seed")}, latency the median over timed rounds of 16
samples of each row's time over the full model's (sampled alone, as a user runs the plain and the
enabled pipeline; one thread), fidelity to the full {ref}-{ref_steps} run, fd_clf to Fashion-MNIST;
95 % paired bootstrap intervals. The rows within {budget:g} + 0.05 of the full model's latency:

| row | latency | FD to full | PSNR (dB) | fd_clf |
|---|---|---|---|---|
{rows}

{timing}Head to head (`docs/results/learned-dit/{pairs[0]}`, paired intervals over the same resamples;
positive: this table better):

```
{chr(10).join(pairs[1:])}
```

What these numbers do and do not show: docs/results/learned-dit/README.md.
"""


def against(settings: dict) -> tuple[str, int]:
    """The solver and steps of the reference run a table was searched and measured against."""
    solver, _, steps = (settings.get("reference_run") or "").rpartition("@")
    return (solver, int(steps)) if solver else (settings["sampler"], settings["steps"])


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--tune", default="tune-1000", help="the evaluation folder, in this folder (tune-1000)")
parser.add_argument("--pairs", default="pairs-1000.txt", help="pairs.py's output on it (pairs-1000.txt)")
parser.add_argument("--alone", default=None, help="alone.py's output timing the rows in one session (none)")
parser.add_argument("--note", default=None, help="a file whose text ends each README (none)")
parser.add_argument(
    "--rows", nargs="+", default=["search-0.50=0.5", "search-0.35=0.35"], metavar="NAME=BUDGET"
)
args = parser.parse_args()
lines = (HERE / args.pairs).read_text().splitlines()
report = json.loads((HERE / args.tune / "tune.json").read_text())
measured = {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in report["rows"]}
config = {**report["config"], "out": args.tune}  # the evaluation folder the README names
for name, budget in ((r.split("=")[0], float(r.split("=")[1])) for r in args.rows):
    schedule = lees.Schedule.load(HERE / name / "schedule.json")
    solver, steps = schedule.settings["sampler"], schedule.settings["steps"]
    ref, ref_steps = against(schedule.settings)
    reference = {"solver": ref, "steps": ref_steps, "guidance_scale": 2.0, "budget": budget,
                 "objective": "search", "evaluation": f"docs/results/learned-dit/{args.tune}",
                 "seed": config.get("seed"), "n": config.get("n")}  # fmt: skip
    policy = TunedPolicy("schedule", name, solver, steps, schedule, reference=reference, measured=measured)
    folder = EMBEDDED / shipped_name(ref, budget)
    path = save_policies([policy], folder)
    shutil.copy(HERE / name / "schedule.png", folder / "schedule.png")
    pairs = [args.pairs, *(line for line in lines if line.startswith(f"{name} "))]
    timed = [] if args.alone is None else (HERE / args.alone).read_text().splitlines()
    alone = [
        args.alone,
        *(
            line
            for line in timed
            if line.split(" ")[0].rstrip(":") in ("full", name, name.replace("-guard", ""))
        ),
    ]
    note = "" if args.note is None else "\n" + (HERE / args.note).read_text()
    (folder / "README.md").write_text(readme(name, budget, schedule, measured, config, pairs, alone) + note)
    row = measured[name]
    print(f"{name}: latency {row['latency_ratio']:.3f}x, PSNR {row['psnr']:.1f} dB, FD to full "
          f"{row['fd_full']:.3g}, fd_clf {row.get('fd_clf', float('nan')):.3g}; wrote {path}")  # fmt: skip
