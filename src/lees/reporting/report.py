"""The reproduction report: results table, Pareto plot and the paper's claims beside our figures.

:func:`build_report` refuses to write anything unless every method of the protocol has a complete
row: a partial table that looks finished is worse than none.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..evaluation.fewer_steps import Point, describe, versus_fewer_steps
from ..evaluation.stats import mean, mean_pm_std, mean_std, paired_t
from ..schedules.registry import parse
from ..utils.files import atomic_write_text
from .claims import CLAIMS, QUALITY, claims
from .plots import frontier_plot, pareto_plot
from .protocol import FEWER_STEPS, METHODS

LATENCY_TOLERANCE = 0.10  # how far latency may stray from the FLOP ratio before the report says so

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


def check_rows(rows: dict[str, dict[str, Any]]) -> None:
    """Fail loudly unless every protocol method has every figure (as per-seed lists)."""
    missing = [m for m in METHODS if m not in rows]
    if missing:
        raise ReportError(f"no results for {', '.join(missing)}: the report would be partial")
    for method, row in rows.items():
        absent = [f for f in ROW_FIELDS if not row.get(f)]
        if absent:
            raise ReportError(f"{method} lacks {', '.join(absent)}")


def frontier_lines(rows: dict[str, dict], metric: str, steps: int, out: Path, field: str = "fd") -> list[str]:
    """The report's headline: every method against the full model at fewer steps, at its latency,
    under the quality ``field`` (methods without that figure are left out)."""

    full = mean(rows["full"]["seconds_per_100"])
    points = {
        m: Point("full" if m == "full" or m in FEWER_STEPS else m,
                 parse(m).steps or steps if m in FEWER_STEPS else steps, mean(row["flop_ratio"]),
                 mean(row["seconds_per_100"]) / full, {metric: mean(row[field])})
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
    claim_lines, claim_payload = _claims_table(rows, meta)
    results = _results(rows)
    payload = {"meta": meta, "methods": results, "claims": claim_payload}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1) + "\n")
    pareto_plot(rows, out / "pareto.png", meta["metric"])
    metric = meta["metric"]
    lines = [f"# LEES reproduction on {meta['model']}", ""]
    lines += [
        f"Command: `{meta['command']}`  ",
        f"Seeds: {meta['seeds']}, {meta['n']} samples each, "
        f"{meta['steps']} DDPM steps, quality = {metric} against {meta['reference']}.",
        "",
    ]
    lines += ["## Results", "", *_results_table(rows, results, metric)]
    lines += ["", "## Against fewer steps", ""]
    for field in QUALITY:
        lines += [*frontier_lines(rows, QUALITY[field] or metric, meta["steps"], out, field), ""]
    t, p = paired_t(rows["lees-0.05"]["fd"], rows["ase"]["fd"])
    lines += [
        "",
        f"Paired t-test over seeds, LEES-0.05 vs ASE default on {metric}: t = {t:.3f}, p = {p:.4g}.",
        "",
    ]
    lines += ["![Pareto](pareto.png)", "", "## The paper's claims, measured here", "", *claim_lines]
    lines += ["", "## Pictures", ""] + [f"- {name}" for name in meta.get("pictures", [])]
    if meta.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def _results(rows: dict[str, dict]) -> dict[str, dict]:
    """Each method's entry of results.json: means, standard deviations and per-seed figures, the latency
    cut against the full model, latency over FLOPs, and the pooled Inception FID."""
    full_lat = mean(rows["full"]["seconds_per_100"])
    results = {}
    for m, row in rows.items():
        lat = mean(row["seconds_per_100"])
        results[m] = {
            "name": METHODS[m],
            **{f"{f}_mean": mean_std(row[f])[0] for f in ROW_FIELDS},
            **{f"{f}_std": mean_std(row[f])[1] for f in ROW_FIELDS},
            "speedup_vs_full": 1 - lat / full_lat,  # latency cut, as the paper counts its "gain"
            "latency_over_flops": lat / full_lat / mean(row["flop_ratio"]),
            "per_seed": {f: row[f] for f in ROW_FIELDS},
            "fid_pooled": row["fid"][0] if row.get("fid") else None,
        }
    return results


def _results_table(rows: dict[str, dict], results: dict[str, dict], metric: str) -> list[str]:
    """The report's results table, the estimator note and where latency strays from the FLOP ratio."""
    lines = [
        f"| method | {metric} | Inception FID (seeds pooled) | KID | s / 100 img | img/s | latency cut "
        f"| executed | FLOPs | latency/FLOP ratio | d{metric} (corrupted) | reuse cache (bytes / sample) |",
        "|---" * 12 + "|",
    ]
    for m, row in rows.items():
        r = results[m]
        fid = f"{r['fid_pooled']:.2f}" if r["fid_pooled"] is not None else "-"
        lines.append(
            f"| {METHODS[m]} | {mean_pm_std(row['fd'])} | {fid} | {mean_pm_std(row['kid'], '.4f')} | "
            f"{mean_pm_std(row['seconds_per_100'], '.2f')} | {mean_pm_std(row['images_per_s'], '.1f')} | "
            f"{r['speedup_vs_full']:+.1%} | {mean_pm_std(row['executed_ratio'], '.2f')} | "
            f"{mean_pm_std(row['flop_ratio'], '.2f')} | {r['latency_over_flops']:.2f} | "
            f"{mean_pm_std(row['delta_fd'])} | {max(row['cache_bytes']):,.0f} |"
        )
    off = [f"{METHODS[m]} ({r['latency_over_flops']:.2f})" for m, r in results.items()
           if abs(r["latency_over_flops"] - 1) > LATENCY_TOLERANCE]  # fmt: skip
    lines += ["", ESTIMATOR_NOTE, ""]
    lines.append(
        f"Latency/FLOP ratio: the latency ratio to the full model over the FLOP ratio. Within "
        f"{LATENCY_TOLERANCE:.0%} of 1 for every method but: {', '.join(off)}."
        if off
        else f"Latency/FLOP ratio within {LATENCY_TOLERANCE:.0%} of 1 for every method."
    )
    return lines
