"""A fast start: ``lees --help`` (and each command's) and ``import lees`` load neither torch nor diffusers;
the public names load on first use and are what they were as plain imports."""

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
from safetensors import safe_open

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "diffusers", "transformers", "matplotlib", "scipy")

EVERY_HELP = """
import argparse, contextlib, io, json, sys
from lees.cli import build_parser

def lines(p, path):
    yield path
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from lines(sub, path + [name])

helped = []
for path in lines(build_parser(), []):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            build_parser().parse_args([*path, "--help"])
        except SystemExit:
            pass
    helped.append([" ".join(path), "usage: lees" in out.getvalue()])
print(json.dumps({"helped": helped, "loaded": [m for m in HEAVY if m in sys.modules]}))
"""


def fresh(code: str) -> dict:
    """What ``code`` printed as JSON, run in a fresh interpreter on this checkout's lees."""
    out = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}"],
        env={"PYTHONPATH": str(SRC), "PATH": ""},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def test_every_help_prints_without_importing_torch():
    found = fresh(EVERY_HELP)
    assert len(found["helped"]) >= 12  # lees, each command and the backbone/classifier subcommands
    assert all(printed for _, printed in found["helped"]), found["helped"]
    assert found["loaded"] == []


def test_import_lees_loads_nothing_heavy_until_a_name_is_used():
    found = fresh(
        "import json, sys, lees\nbefore = [m for m in HEAVY if m in sys.modules]\nlees.Schedule\n"
        "print(json.dumps({'before': before, 'after': 'torch' in sys.modules}))"
    )
    assert found == {"before": [], "after": True}


def test_every_public_name_loads_and_stays_what_it_is():
    import lees.enable  # noqa: F401  (the submodule: its import must not rebind lees.enable)
    from lees.enable import enable
    from lees.schedules import baselines
    from lees.schedules.schedule import Schedule

    assert lees.enable is enable and lees.baselines is baselines and lees.Schedule is Schedule
    assert all(hasattr(lees, name) for name in lees.__all__)
    modules = [name for name in lees.__all__ if isinstance(getattr(lees, name), types.ModuleType)]
    assert modules == ["baselines"]
    assert set(lees.__all__) <= set(dir(lees))
    namespace: dict = {}
    exec("from lees import *", namespace)
    assert namespace["enable"] is enable and namespace["tuned"] is lees.tuned


def test_the_public_enable_brings_the_tuners_cache_glue():
    """A tuned cache policy attaches through glue that lees.tune registers: ``lees.enable`` loads it."""
    found = fresh(
        "import json, lees\nfrom lees.schedules import tuned\nbefore = len(tuned._ATTACHERS)\n"
        "lees.enable\nprint(json.dumps([before, len(tuned._ATTACHERS)]))"
    )
    assert found == [0, 1]


def test_the_reference_statistics_read_back_as_written_and_others_are_computed(tmp_path, monkeypatch):
    from lees.evaluation import metrics

    monkeypatch.setenv("LEES_CACHE", str(tmp_path / "cache"))
    path = metrics.save_reference_gaussians(tmp_path / "reference.safetensors", {"clf": 64})
    extractor = metrics.ClassifierFeatures()
    mean, cov = metrics.gaussian(metrics.reference_features(extractor, n=64))
    computed = metrics.reference_gaussian(extractor, n=32, shipped=path)  # not in the file
    assert computed[0].shape == mean.shape and not np.allclose(computed[0], mean)
    monkeypatch.setattr(metrics, "reference_features", None)  # stored ones are read, not computed
    read = metrics.reference_gaussian(extractor, n=64, shipped=path)
    assert np.array_equal(read[0], mean)
    np.testing.assert_allclose(read[1], cov, rtol=1e-6, atol=1e-7 * np.abs(cov).max())  # float32
    assert np.array_equal(read[1], read[1].T)


def test_the_shipped_statistics_equal_a_recomputation(tmp_path, monkeypatch):
    from lees.evaluation import metrics

    monkeypatch.setenv("LEES_CACHE", str(tmp_path))
    extractor = metrics.ClassifierFeatures()
    feats = metrics.reference_features(extractor, n=metrics.REFERENCE_N["clf"])
    mean, cov = metrics.gaussian(feats)
    monkeypatch.setattr(metrics, "reference_features", None)
    shipped = metrics.reference_gaussian(extractor, n=metrics.REFERENCE_N["clf"])
    np.testing.assert_allclose(shipped[0], mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(shipped[1], cov, rtol=1e-5, atol=1e-6 * np.abs(cov).max())
    subset = metrics.gaussian(feats[:500])  # an FD against the shipped statistics: as against the exact
    exact, read = metrics.frechet_distance(*subset, mean, cov), metrics.frechet_distance(*subset, *shipped)
    assert abs(read - exact) <= 1e-5 * exact


def test_a_first_demo_computes_no_reference(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from lees.evaluation import metrics
    from lees.reporting import demo

    monkeypatch.setenv("LEES_CACHE", str(tmp_path / "cache"))
    fid = metrics.reference_key(metrics.InceptionFeatures, "fashion-mnist", "train", 2000, 0)
    save_file({f"{fid}.mean": np.zeros(2), f"{fid}.cov_upper": np.zeros(3, np.float32)}, tmp_path / "s")
    assert metrics.reference_at_hand(metrics.InceptionFeatures, 2000, shipped=tmp_path / "s")
    assert not metrics.reference_at_hand(metrics.InceptionFeatures, 2000, shipped=tmp_path / "none")
    cached = tmp_path / "cache" / "features" / "inception-fashion-mnist-train-2000-seed0.npy"
    cached.parent.mkdir(parents=True)
    np.save(cached, np.zeros((2, 2)))  # computed once by an earlier command: at hand too
    assert metrics.reference_at_hand(metrics.InceptionFeatures, 2000, shipped=tmp_path / "none")
    said = []
    monkeypatch.setattr(demo, "reference_at_hand", lambda *args: False)
    assert demo.demo_metrics(["clf", "inception"], said.append) == ["clf"]
    assert "--metric clf inception" in said[0]
    monkeypatch.setattr(demo, "reference_at_hand", lambda *args: True)
    assert demo.demo_metrics(["clf", "inception"], said.append) == ["clf", "inception"]
    clf = metrics.reference_key(metrics.ClassifierFeatures(), "fashion-mnist", "train", 10_000, 0)
    with safe_open(metrics.SHIPPED_REFERENCE, "numpy") as stored:  # fd_clf's reference ships
        assert stored.get_slice(f"{clf}.mean").get_shape() == [128]
