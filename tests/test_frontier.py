"""The fewer-steps bar: a method judged against the full model's curve (one per solver) at its latency,
and ``lees frontier`` on a flow-matching transformer with a second solver's curve."""

import json

import numpy as np
import pytest

from lees.cli import main
from lees.evaluation.fewer_steps import Point, versus_best_solver, versus_fewer_steps

CURVES = [
    Point("full", 50, 1.0, 1.0, {"fd": 4.0}),
    Point("full", 25, 0.5, 0.5, {"fd": 8.0}),
    Point("full", 50, 1.0, 1.0, {"fd": 3.0}, "dpm++"),
    Point("full", 25, 0.5, 0.5, {"fd": 5.0}, "dpm++"),
]


def test_a_method_is_judged_on_the_line_between_the_curves_neighbouring_points():
    method = Point("uniform-2", 50, 0.6, 0.75, {"fd": 5.0})
    judged = versus_fewer_steps(method, CURVES, "fd")
    assert judged["curve"] == pytest.approx(6.0)  # halfway between 8 at 0.5 and 4 at 1.0
    assert judged["margin"] == pytest.approx(1 / 6) and judged["verdict"] == "above"
    other = versus_fewer_steps(method, CURVES, "fd", solver="dpm++")
    assert other["curve"] == pytest.approx(4.0) and other["verdict"] == "below"  # 25 % worse than dpm++


def with_replicates(point, values):
    fields = (point.method, point.steps, point.flop_ratio, point.latency_ratio, point.quality, point.solver)
    return Point(*fields, {"fd": np.asarray(values, dtype=float)})


def test_the_verdict_reads_the_paired_interval_of_the_margin_on_the_interpolated_curve():
    # Three resamples: the curve at latency 0.75 is halfway between its two runs on each resample.
    curve = [with_replicates(CURVES[0], [4.0, 3.0, 5.0]), with_replicates(CURVES[1], [8.0, 9.0, 7.0])]
    method = Point("uniform-2", 50, 0.6, 0.75, {"fd": 5.0})
    tight = versus_fewer_steps(with_replicates(method, [5.0, 5.5, 5.5]), curve, "fd")
    margins = [(6.0 - 5.0) / 6.0, (6.0 - 5.5) / 6.0, (6.0 - 5.5) / 6.0]  # by hand: curve 6, 6, 6
    assert tight["interval"] == pytest.approx(list(np.quantile(margins, [0.025, 0.975])))
    assert tight["margin"] == pytest.approx(1 / 6) and tight["verdict"] == "above"
    wide = versus_fewer_steps(with_replicates(method, [5.0, 7.0, 5.5]), curve, "fd")
    assert wide["margin"] == pytest.approx(1 / 6) and wide["verdict"] == "on"  # the interval holds a tie
    worse = versus_fewer_steps(
        with_replicates(Point("x", 50, 0.6, 0.75, {"fd": 7.0}), [7, 7, 6.5]), curve, "fd"
    )
    assert worse["verdict"] == "below" and worse["interval"][1] < 0


def test_the_best_solver_is_the_lowest_curve_at_the_methods_latency():
    method = Point("uniform-2", 50, 0.6, 0.75, {"fd": 5.0})
    best = versus_best_solver(method, CURVES, "fd")
    assert best["solver"] == "dpm++" and best["curve"] == pytest.approx(4.0) and best["verdict"] == "below"
    outside = versus_best_solver(Point("uniform-5", 50, 0.3, 0.3, {"fd": 9.0}), CURVES, "fd")
    assert outside["curve"] is None and outside["verdict"] == "outside the measured range"


def without_inception(tmp_path, monkeypatch) -> None:
    """An offline frontier run: no Inception weights installed, fd_clf's reference from 200 images in a
    temporary cache."""
    import lees.reporting.frontier_run

    def no_inception():
        raise FileNotFoundError("the FID Inception weights are not installed")

    monkeypatch.setenv("LEES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lees.reporting.frontier_run, "inception_path", no_inception)
    monkeypatch.setattr(lees.reporting.frontier_run, "REFERENCE_N", {"clf": 200})


def test_frontier_on_a_flow_matching_transformer_draws_a_curve_per_solver(tmp_path, monkeypatch, capsys):
    without_inception(tmp_path, monkeypatch)
    out = tmp_path / "frontier"
    argv = ["frontier", "--model", "arch:embedded-dit", "-n", "2", "--steps", "4", "--fewer", "2",
            "--rows", "all", "--solvers", "dpm++", "--solver-steps", "4", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "deepcache-3: left out: DeepCache needs a UNet" in printed  # a UNet's method, left out with why
    rows = [json.loads(line) for line in (out / "frontier.jsonl").read_text().splitlines()]
    curves = [(r["method"], r["solver"], r["steps"]) for r in rows if r["method"] == "full"]
    assert curves == [("full", None, 4), ("full", None, 2), ("full", "dpm++", 4), ("full", "dpm++", 1)]
    ase = next(r for r in rows if r["method"] == "ase")
    assert ase["sampler"] == "euler" and ase["guidance_scale"] == 2.0 and ase["model"] == "arch:embedded-dit"
    assert set(ase["versus_best_solver"]) == set(ase["versus_fewer_steps"]) == {"fd_clf"}
    judged = ase["versus_fewer_steps"]["fd_clf"]
    low, high = judged["interval"]
    assert low <= high and judged["resamples"] == 200 and judged["level"] == 0.95
    assert judged["verdict"] == ("above" if low > 0 else "below" if high < 0 else "on")
    assert all(r["fd_clf_interval"][0] <= r["fd_clf_interval"][1] for r in rows)
    assert "95% interval" in printed
    assert (out / "frontier-fd_clf.png").is_file()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--fewer", "35", "25", "--fid-rows", "full"], ["Inception FID", "--fid-rows", "full@35"]),
        (["--fewer", "35", "25", "--fid-rows", "full", "full@30"], ["--fid-rows names full@30"]),
        (["--fewer", "50"], ["--fewer 50", "two or more step counts"]),
        (["--solvers", "ddim", "--solver-steps", "20"], ["--solver-steps 20", "two or more"]),
    ],
)
def test_frontier_refuses_its_arguments_before_the_first_sample(tmp_path, monkeypatch, capsys, extra, words):
    import lees.reporting.frontier_run

    def sampled(*args, **kwargs):
        raise AssertionError("sampled before the arguments were checked")

    monkeypatch.setattr(lees.reporting.frontier_run, "sample_stored", sampled)
    argv = ["frontier", "-n", "200", "--rows", "reuse", *extra, "--out", str(tmp_path / "f")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    ok = ["--fewer", "35", "25", "--fid-rows", "full", "full@35", "uniform-2"]  # a good curve: on to sampling
    with pytest.raises(AssertionError, match="sampled before"):
        main(["frontier", "-n", "200", "--rows", "reuse", *ok, "--out", str(tmp_path / "g")])
