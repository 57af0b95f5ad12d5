"""The reproduction report: results table, Pareto plot and the paper's claims beside our figures.

:func:`build_report` refuses to write anything unless every method of the protocol has a complete
row: a partial table that looks finished is worse than none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .files import atomic_write_text

# The protocol's methods, in report order (paper names in brackets).
METHODS = {
    "full": "B1 full model",
    "ase": "B2 ASE default",
    "ase-grid": "B3 ASE grid-tuned",
    "lees-0.01": "LEES hard, lambda=0.01",
    "lees-0.05": "LEES hard, lambda=0.05",
    "lees-0.1": "LEES hard, lambda=0.1",
    "ste": "LEES trained with the paper's STE (lambda=0.05)",
    "soft": "A1 LEES soft gating (lambda=0.05)",
    "lambda-0": "A2 LEES lambda=0",
    "random": "A3 random fixed gates (LEES-0.05 ratio)",
    "budget": "LEES budget mode (ours)",
    "router": "Router: learned run-or-reuse (ours)",
    "reuse-2": "uniform reuse, all blocks every 2nd step",
    "deepcache-3": "DeepCache N=3 (outer level runs)",
    "full-35": "full model, 35 steps",
    "full-25": "full model, 25 steps",
    "full-15": "full model, 15 steps",
}
FEWER_STEPS = ("full-35", "full-25", "full-15")  # with "full": the curve every method must beat
LATENCY_TOLERANCE = 0.10  # how far latency may stray from the FLOP ratio before the report says so
TIMING_NOISE = 0.02  # latencies of any two methods within 2 % of each other count as equal in the claims
QUALITY_MARGIN = 0.009  # the paper's "keeps quality": LEES's FID within 0.9 % of the full model's (claim 1)
RATIO_TOLERANCE = 0.05  # the paper gives block ratios in round tens (60 %, 70 %): +-5 points round to them
ESTIMATOR_NOTE = (
    "The LEES hard rows, lambda=0, budget mode and the gates of A1 are trained with the soft estimator "
    "(each block mixed by its gate value while training, `lees train --estimator soft`, the default) and "
    "sampled with hard skipping (A1: mixed); only the STE row is trained with the paper's straight-through "
    "estimator, which collapses on the embedded model (docs/method.md)."
)
ROW_FIELDS = (
    "fd", "kid", "seconds_per_100", "images_per_s", "executed_ratio", "flop_ratio", "delta_fd", "cache_bytes"
)  # fmt: skip


class ReportError(ValueError):
    """A report that cannot be written honestly (a method or a figure is missing)."""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test over seeds (scipy's ttest_rel): t statistic and two-sided p-value."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("a paired t-test needs two equally long series of at least 2 seeds")
    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def check_rows(rows: dict[str, dict[str, Any]]) -> None:
    """Fail loudly unless every protocol method has every figure (as per-seed lists)."""
    missing = [m for m in METHODS if m not in rows]
    if missing:
        raise ReportError(f"no results for {', '.join(missing)}: the report would be partial")
    for method, row in rows.items():
        absent = [f for f in ROW_FIELDS if not row.get(f)]
        if absent:
            raise ReportError(f"{method} lacks {', '.join(absent)}")


def mean_pm_std(values: Sequence[float], fmt: str = ".3f") -> str:
    """``mean ± std`` over seeds, as every report prints it."""
    m, s = mean_std(values)
    return f"{m:{fmt}} ± {s:{fmt}}"


def _ms(row: dict, field: str, fmt: str = ".3f") -> str:
    return mean_pm_std(row[field], fmt)


def _mean(row: dict, field: str) -> float:
    return mean_std(row[field])[0]


@dataclass
class Claim:
    """One numbered claim of the paper beside what we measured."""

    number: int
    paper: str
    measured: str
    status: str  # held / not held / not measurable here
    why: str


QUALITY = {"fd": None, "fid": "Inception FID"}  # row field -> metric name (None: the run's own metric)


class NotMeasured(KeyError):
    """A claim needs a figure the run did not measure under this metric (e.g. FID of a minor row)."""


class _Measured(dict):
    def __missing__(self, method: str) -> float:
        raise NotMeasured(method)


@dataclass(frozen=True)
class Figures:
    """What the claims are judged on under one quality metric: each method's means over seeds, and
    the run's metadata. ``field`` is the rows' quality field: ``fd`` (the run's metric, per seed) or
    ``fid`` (Inception FID, one figure over all seeds' samples pooled, for the rows that have it)."""

    rows: dict[str, dict]
    meta: dict
    fd: dict[str, float]
    lat: dict[str, float]
    ratio: dict[str, float]
    field: str = "fd"

    @classmethod
    def of(cls, rows: dict[str, dict], meta: dict, field: str = "fd") -> Figures:
        """The means of quality, latency and executed ratio for every method of ``rows``."""

        def means(name: str) -> dict[str, float]:
            return _Measured({m: _mean(r, name) for m, r in rows.items() if r.get(name)})

        return cls(rows, meta, means(field), means("seconds_per_100"), means("executed_ratio"), field)

    @property
    def metric(self) -> str:
        return QUALITY[self.field] or self.meta["metric"]

    def quality(self, method: str) -> str:
        """The method's quality as report text: mean ± std over seeds, or the pooled figure."""
        row = self.rows[method]
        if not row.get(self.field):
            raise NotMeasured(method)
        return _ms(row, self.field) if len(row[self.field]) > 1 else f"{row[self.field][0]:.3f} (pooled)"

    def speedup(self, method: str) -> float:
        """The paper's "gain": the latency cut against the full model (312 -> 189 ms is 39 %)."""
        return 1 - self.lat[method] / self.lat["full"]

    def latency(self, a: str, b: str) -> int:
        """-1 if ``a`` is faster than ``b``, 1 if slower, 0 if within the timing noise (any two methods)."""
        r = self.lat[a] / self.lat[b]
        return -1 if r < 1 - TIMING_NOISE else int(r > 1 + TIMING_NOISE)


@dataclass(frozen=True)
class ClaimSpec:
    """A claim of the paper (its text with its figures), our rule, and what we measure to judge it.

    ``measure`` returns the measurement as report text and whether the rule holds (None: not
    measurable here).
    """

    number: int
    paper: str
    rule: str
    measure: Callable[[Figures], tuple[str, bool | None]]


CLAIMS: list[ClaimSpec] = []


def _claim(number: int, paper: str, rule: str) -> Callable:
    """Register the decorated measurement as claim ``number`` (claims are judged in this order)."""

    def register(measure: Callable[[Figures], tuple[str, bool | None]]) -> Callable:
        CLAIMS.append(ClaimSpec(number, paper, rule, measure))
        return measure

    return register


def judge(spec: ClaimSpec, figures: Figures) -> Claim:
    """One claim judged on one run's figures under their metric."""
    try:
        measured, held = spec.measure(figures)
    except NotMeasured as missing:
        return Claim(spec.number, spec.paper, f"no {figures.metric} for {missing.args[0]}", "not measured",
                     spec.rule)  # fmt: skip
    status = "not measurable here" if held is None else "held" if held else "not held"
    return Claim(spec.number, spec.paper, measured, status, spec.rule)


def claims(rows: dict[str, dict], meta: dict, field: str = "fd") -> list[Claim]:
    """Each claim of the paper's evaluation, judged on our rows under the quality ``field`` (the same
    rule for every run and metric)."""
    figures = Figures.of(rows, meta, field)
    return [judge(spec, figures) for spec in CLAIMS]


def _relative_fd(f: Figures, method: str) -> float:
    return f.fd[method] / f.fd["full"] - 1


@_claim(
    1,
    "LEES (lambda=0.05) quality within 0.9 % of the full model (FID 3.08 vs 3.05)",
    f"relative FD change <= +{QUALITY_MARGIN:.1%}, the paper's own margin",
)
def _quality_kept(f: Figures) -> tuple[str, bool]:
    rel = _relative_fd(f, "lees-0.05")
    return f"{f.metric} {f.quality('lees-0.05')} vs {f.quality('full')} ({rel:+.1%})", rel <= QUALITY_MARGIN


@_claim(
    2,
    "LEES is 39 % faster end to end than the full model (189 vs 312 ms)",
    "latency cut = 1 - LEES / full >= 39 %, as the paper counts it",
)
def _faster_than_full(f: Figures) -> tuple[str, bool]:
    cut = f.speedup("lees-0.05")
    return f"{cut:+.1%} ({f.lat['lees-0.05']:.2f} vs {f.lat['full']:.2f} s per 100 images)", cut >= 0.39


def _beats(f: Figures, other: str) -> tuple[str, bool]:
    """LEES-0.05 against ``other``: lower FD and faster beyond the timing noise."""
    text = (
        f"{f.metric} {f.fd['lees-0.05']:.3f} vs {f.fd[other]:.3f}; "
        f"{f.lat['lees-0.05']:.2f} vs {f.lat[other]:.2f} s"
    )
    return text, f.fd["lees-0.05"] < f.fd[other] and f.latency("lees-0.05", other) < 0


BEATS_RULE = (
    f"better on both: lower FD, and faster by more than the {TIMING_NOISE:.0%} timing noise (any method)"
)


@_claim(3, "LEES beats ASE default on quality and latency (FID 3.08 vs 3.25, 189 vs 218 ms)", BEATS_RULE)
def _beats_ase(f: Figures) -> tuple[str, bool]:
    return _beats(f, "ase")


@_claim(4, "LEES beats ASE grid-tuned (FID 3.16, 206 ms)", BEATS_RULE)
def _beats_ase_grid(f: Figures) -> tuple[str, bool]:
    text, held = _beats(f, "ase-grid")
    return f"{text} (grid: {f.rows['ase-grid'].get('note', '')})", held


@_claim(
    5,
    "Executed-block ratio: ASE default 70 %, LEES 60 %",
    f"each within {RATIO_TOLERANCE * 100:.0f} percentage points of the paper's figure (given in round "
    "tens, so whatever rounds to them), and LEES below ASE",
)
def _block_ratios(f: Figures) -> tuple[str, bool]:
    lees, ase = f.ratio["lees-0.05"], f.ratio["ase"]
    near = abs(lees - 0.6) <= RATIO_TOLERANCE and abs(ase - 0.7) <= RATIO_TOLERANCE
    return f"ASE {ase:.1%}, LEES {lees:.1%}", near and lees < ase


@_claim(
    6,
    "Soft gating is slightly worse (FID 3.10, 194 ms)",
    "worse quality than hard gating, and latency nearer hard gating's than the full model's (the paper: "
    "194 ms vs 189 hard, 312 full); our soft gating runs every block, mixed by its gate value",
)
def _soft_gating(f: Figures) -> tuple[str, bool]:
    text = (
        f"{f.metric} {f.fd['soft']:.3f} vs hard {f.fd['lees-0.05']:.3f}; {f.lat['soft']:.2f} s vs hard "
        f"{f.lat['lees-0.05']:.2f}, full {f.lat['full']:.2f}"
    )
    near_hard = f.lat["soft"] - f.lat["lees-0.05"] < f.lat["full"] - f.lat["soft"]
    return text, f.fd["soft"] > f.fd["lees-0.05"] and near_hard


@_claim(
    7,
    "lambda=0 keeps quality (FID 3.06) but block usage rebounds to 82 %",
    f"FD within {QUALITY_MARGIN:.1%} of the full model's (claim 1's margin), and more blocks run "
    "than with lambda=0.05",
)
def _lambda_zero(f: Figures) -> tuple[str, bool]:
    rel = _relative_fd(f, "lambda-0")
    text = (
        f"{f.metric} {f.fd['lambda-0']:.3f} ({rel:+.1%} vs full), executed {f.ratio['lambda-0']:.1%} "
        f"(LEES-0.05 {f.ratio['lees-0.05']:.1%})"
    )
    return text, rel <= QUALITY_MARGIN and f.ratio["lambda-0"] > f.ratio["lees-0.05"]


@_claim(
    8,
    "Random fixed gates underperform both quality and speed baselines",
    "same executed ratio as LEES-0.05; worse quality than both",
)
def _random_gates(f: Figures) -> tuple[str, bool]:
    text = f"{f.metric} random {f.fd['random']:.3f} vs LEES {f.fd['lees-0.05']:.3f}, ASE {f.fd['ase']:.3f}"
    return text, f.fd["random"] > max(f.fd["lees-0.05"], f.fd["ase"])


@_claim(
    9,
    "LEES dominates ASE on the quality-latency Pareto front",
    f"some LEES point at least as good on both axes (latencies within {TIMING_NOISE:.0%} are equal)",
)
def _pareto(f: Figures) -> tuple[str, bool]:
    lees = ("lees-0.01", "lees-0.05", "lees-0.1")
    dominated = [any(f.fd[m] <= f.fd[a] and f.latency(m, a) <= 0 for m in lees) for a in ("ase", "ase-grid")]
    return f"ASE default dominated: {dominated[0]}; ASE grid dominated: {dominated[1]}", all(dominated)


@_claim(10, "The difference to ASE is significant (paired t-test p < 0.05)", "paired over seeds, LEES lower")
def _significance(f: Figures) -> tuple[str, bool | None]:
    lees, ase = (f.rows[m].get(f.field) or [] for m in ("lees-0.05", "ase"))
    if min(len(lees), len(ase)) < 2:
        return f"{f.metric} is one figure over all seeds, not one per seed", None
    t, p = paired_t(lees, ase)
    return f"t = {t:.2f}, p = {p:.3g} over {len(lees)} seeds", p < 0.05 and t < 0


@_claim(
    11,
    "Robustness: dFID +1.50 full, +1.89 ASE, +1.55 LEES (LEES matches full)",
    "LEES at least as close to full as ASE is",
)
def _robustness(f: Figures) -> tuple[str, bool | None]:
    if f.field != "fd":
        return f"the corrupted samples are scored under {f.meta['metric']} only", None
    d = {m: _mean(f.rows[m], "delta_fd") for m in ("full", "ase", "lees-0.05")}
    text = f"d{f.metric} full {d['full']:+.3f}, ASE {d['ase']:+.3f}, LEES {d['lees-0.05']:+.3f}"
    return text, abs(d["lees-0.05"] - d["full"]) <= abs(d["ase"] - d["full"])


@_claim(
    12,
    "Gate training costs < 5 % of one backbone fine-tuning epoch",
    "gate run vs one epoch of backbone training, both timed on the same device in this run",
)
def _training_cost(f: Figures) -> tuple[str, bool]:
    over = f.meta.get("train_overhead")
    if over is None:
        return "not recorded", False
    text = (
        f"{over:.1%} (gates: {f.meta.get('gate_steps', '?')} steps in {f.meta['gate_seconds']:.0f} s; "
        f"backbone epoch {f.meta['backbone_epoch_seconds']:.0f} s)"
    )
    return text, over < 0.05


@_claim(
    13,
    "Gates settle early: KL between checkpoints < 0.05 after 60 % of training",
    "first check after which KL stays < 0.05",
)
def _settling(f: Figures) -> tuple[str, bool]:
    at = f.meta.get("kl_settled_at")
    return (
        (f"below 0.05 from {at:.0%} of training", at <= 0.6)
        if at is not None
        else ("never below 0.05", False)
    )


@_claim(
    14,
    "Same lambda transfers to CelebA-HQ/ADM (34 %) and ImageNet/LDM (46 %)",
    "no such models or data offline; see the DiT/ADM/LDM timing benchmarks",
)
def _transfer(f: Figures) -> tuple[str, None]:
    return "-", None


def pareto_plot(rows: dict[str, dict], path: Path, metric: str) -> Path:
    """Quality (lower is better) against latency per 100 images, with error bars over seeds."""
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (method, row) in enumerate(rows.items()):  # tab20: a distinct colour for each of the 11 rows
        (x, xe), (y, ye) = mean_std(row["seconds_per_100"]), mean_std(row["fd"])
        style = "o-" if method.startswith("lees") else "s"
        ax.errorbar(
            x, y, xerr=xe, yerr=ye, fmt=style, capsize=3, label=METHODS[method], color=plt.cm.tab20(i)
        )
    lees = sorted(
        (mean_std(rows[m]["seconds_per_100"])[0], mean_std(rows[m]["fd"])[0])
        for m in ("lees-0.01", "lees-0.05", "lees-0.1")
    )
    ax.plot(*zip(*lees, strict=True), "k--", lw=0.8, label="LEES lambda sweep")
    ax.set_xlabel("latency per 100 images, whole sampling run (s)")
    ax.set_yscale("log")  # the methods span two orders of magnitude in quality
    ax.set_ylabel(f"{metric} (lower is better, log scale)")
    ax.set_title("quality vs latency, mean ± std over seeds")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def frontier_lines(rows: dict[str, dict], metric: str, steps: int, out: Path, field: str = "fd") -> list[str]:
    """The report's headline: every method against the full model at fewer steps, at its latency,
    under the quality ``field`` (methods without that figure are left out)."""
    from .frontier import Point, describe, frontier_plot, versus_fewer_steps

    full = _mean(rows["full"], "seconds_per_100")
    points = {
        m: Point("full" if m == "full" or m in FEWER_STEPS else m,
                 int(m.split("-")[1]) if m in FEWER_STEPS else steps, _mean(row, "flop_ratio"),
                 _mean(row, "seconds_per_100") / full, {metric: _mean(row, field)})
        for m, row in rows.items() if row.get(field)
    }  # fmt: skip
    curve = ("full", *FEWER_STEPS)
    if not all(m in points for m in curve):
        return [f"(no fewer-steps curve under {metric}: the full model's rows lack it)"]
    name = "frontier.png" if field == "fd" else f"frontier-{field}.png"
    frontier_plot(list(points.values()), metric, out / name, f"{metric} vs paired latency")
    lines = [
        f"Under {metric}: the full model at 50, 35, 25 and 15 steps, sampled side by side with every "
        f"method, traces the curve a method must beat at its measured latency (linear between "
        f"neighbours; `{name}`):",
        "",
    ]
    lines += [f"- {describe(p, versus_fewer_steps(p, list(points.values()), metric))}"
              for m, p in points.items() if p.method != "full"]  # fmt: skip
    return lines


def _claims_table(rows: dict[str, dict], meta: dict) -> tuple[list[str], list[dict]]:
    """The claims judged under each metric the run measured, one column pair per metric; the rows
    where the metrics disagree are listed under the table."""
    fields = [f for f in QUALITY if any(r.get(f) for r in rows.values())]
    judged = {f: claims(rows, meta, f) for f in fields}
    names = {f: QUALITY[f] or meta["metric"] for f in fields}
    head = (
        "| # | claim (paper) | " + " | ".join(f"{names[f]}: measured | status" for f in fields) + " | rule |"
    )
    lines = [head, "|---" * (3 + 2 * len(fields)) + "|"]
    for i, spec in enumerate(CLAIMS):
        cells = " | ".join(f"{judged[f][i].measured} | **{judged[f][i].status}**" for f in fields)
        lines.append(f"| {spec.number} | {spec.paper} | {cells} | {spec.rule} |")
    decided = [[judged[f][i].status for f in fields] for i in range(len(CLAIMS))]
    split = [str(CLAIMS[i].number) for i, s in enumerate(decided)
             if len({x for x in s if x in ("held", "not held")}) > 1]  # fmt: skip
    if len(fields) > 1:
        lines += ["", f"The metrics disagree on claim(s) {', '.join(split)}." if split
                  else "Where both metrics judge a claim, they agree."]  # fmt: skip
    payload = []
    for i in range(len(CLAIMS)):  # the run's own metric first (fields[0] is "fd"), then the others
        entry = dict(judged["fd"][i].__dict__)
        for f in fields[1:]:
            entry |= {f"{f}_measured": judged[f][i].measured, f"{f}_status": judged[f][i].status}
        payload.append(entry)
    return lines, payload


def build_report(rows: dict[str, dict], out: Path, meta: dict) -> Path:
    """Write results.json, report.md and pareto.png to ``out``; raise ReportError if anything is missing."""
    check_rows(rows)
    if any(math.isnan(v) for row in rows.values() for f in ROW_FIELDS for v in row[f]):
        raise ReportError("a figure is NaN: the report would not be honest")
    out.mkdir(parents=True, exist_ok=True)
    metric = meta["metric"]
    claim_lines, claim_payload = _claims_table(rows, meta)
    full_lat = _mean(rows["full"], "seconds_per_100")
    results = {}
    for m, row in rows.items():
        lat = _mean(row, "seconds_per_100")
        results[m] = {
            "name": METHODS[m],
            **{f"{f}_mean": mean_std(row[f])[0] for f in ROW_FIELDS},
            **{f"{f}_std": mean_std(row[f])[1] for f in ROW_FIELDS},
            "speedup_vs_full": 1 - lat / full_lat,  # latency cut, as the paper counts its "gain"
            "latency_over_flops": lat / full_lat / _mean(row, "flop_ratio"),
            "per_seed": {f: row[f] for f in ROW_FIELDS},
            "fid_pooled": row["fid"][0] if row.get("fid") else None,
        }
    payload = {"meta": meta, "methods": results, "claims": claim_payload}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1) + "\n")
    pareto_plot(rows, out / "pareto.png", metric)

    lines = [f"# LEES reproduction on {meta['model']}", ""]
    lines += [
        f"Command: `{meta['command']}`  ",
        f"Seeds: {meta['seeds']}, {meta['n']} samples each, "
        f"{meta['steps']} DDPM steps, quality = {metric} against {meta['reference']}.",
        "",
    ]
    lines += [
        "## Results",
        "",
        f"| method | {metric} | Inception FID (seeds pooled) | KID | s / 100 img | img/s | latency cut "
        "| executed | FLOPs | latency/FLOP ratio | d"
        + metric
        + " (corrupted) | reuse cache (bytes / sample) |",
        "|---" * 12 + "|",
    ]
    for m, row in rows.items():
        r = results[m]
        fid = f"{r['fid_pooled']:.2f}" if r["fid_pooled"] is not None else "-"
        lines.append(
            f"| {METHODS[m]} | {_ms(row, 'fd')} | {fid} | {_ms(row, 'kid', '.4f')} | "
            f"{_ms(row, 'seconds_per_100', '.2f')} | {_ms(row, 'images_per_s', '.1f')} | "
            f"{r['speedup_vs_full']:+.1%} | {_ms(row, 'executed_ratio', '.2f')} | "
            f"{_ms(row, 'flop_ratio', '.2f')} | {r['latency_over_flops']:.2f} | {_ms(row, 'delta_fd')} | "
            f"{max(row['cache_bytes']):,.0f} |"
        )
    off = [f"{METHODS[m]} ({r['latency_over_flops']:.2f})" for m, r in results.items()
           if abs(r["latency_over_flops"] - 1) > LATENCY_TOLERANCE]  # fmt: skip
    lines += ["", ESTIMATOR_NOTE]
    lines += [
        "",
        f"Latency/FLOP ratio: the latency ratio to the full model over the FLOP ratio. Within "
        f"{LATENCY_TOLERANCE:.0%} of 1 for every method but: {', '.join(off)}."
        if off
        else f"Latency/FLOP ratio within {LATENCY_TOLERANCE:.0%} of 1 for every method.",
    ]
    lines += ["", "## Against fewer steps", ""]
    for field in QUALITY:
        name = QUALITY[field] or metric
        lines += [*frontier_lines(rows, name, meta["steps"], out, field), ""]
    t, p = paired_t(rows["lees-0.05"]["fd"], rows["ase"]["fd"])
    lines += [
        "",
        f"Paired t-test over seeds, LEES-0.05 vs ASE default on {metric}: t = {t:.3f}, p = {p:.4g}.",
        "",
    ]
    lines += [
        "![Pareto](pareto.png)",
        "",
        "## The paper's claims, measured here",
        "",
        *claim_lines,
    ]
    lines += ["", "## Pictures", ""] + [f"- {name}" for name in meta.get("pictures", [])]
    if meta.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
