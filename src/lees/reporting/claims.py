"""The paper's claims beside our figures: each claim's text, the rule we judge it by, and how it is
measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..evaluation.stats import mean, mean_pm_std, paired_t

TIMING_NOISE = 0.02  # latencies of any two methods within 2 % of each other count as equal in the claims

QUALITY_MARGIN = 0.009  # the paper's "keeps quality": LEES's FID within 0.9 % of the full model's (claim 1)

RATIO_TOLERANCE = 0.05  # the paper gives block ratios in round tens (60 %, 70 %): +-5 points round to them


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
            return _Measured({m: mean(r[name]) for m, r in rows.items() if r.get(name)})

        return cls(rows, meta, means(field), means("seconds_per_100"), means("executed_ratio"), field)

    @property
    def metric(self) -> str:
        return QUALITY[self.field] or self.meta["metric"]

    def quality(self, method: str) -> str:
        """The method's quality as report text: mean ± std over seeds, or the pooled figure."""
        row = self.rows[method]
        if not row.get(self.field):
            raise NotMeasured(method)
        return (
            mean_pm_std(row[self.field]) if len(row[self.field]) > 1 else f"{row[self.field][0]:.3f} (pooled)"
        )

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
    d = {m: mean(f.rows[m]["delta_fd"]) for m in ("full", "ase", "lees-0.05")}
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
