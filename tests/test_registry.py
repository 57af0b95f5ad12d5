"""One grammar for method names: each name builds what its builder builds, older names are aliases,
and every stored result's names still read."""

import json
from pathlib import Path

import numpy as np
import pytest
from diffusers import DDIMScheduler, DDPMScheduler

from lees import Schedule, find_blocks, pipeline_timesteps
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.actions import SKIP
from lees.models.architectures import DDPM_NOISE
from lees.models.backbones import EMBEDDED_DIR
from lees.reporting.protocol import METHODS
from lees.schedules import registry
from lees.schedules.baselines import ase_schedule, deepcache_schedule, random_schedule, uniform_schedule
from lees.schedules.registry import build_schedule, canonical, parse
from lees.schedules.schedule import ScheduleError

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
NOISE = DDPMScheduler(**DDPM_NOISE)


@pytest.fixture
def blocks(tiny):
    return find_blocks(tiny)


@pytest.mark.parametrize(
    ("old", "new"),
    [("reuse-2", "uniform-2"), ("uniform-3-reuse", "uniform-3"), ("full-25", "full@25"),
     ("uniform-2-reuse@35", "uniform-2@35"), ("deepcache-3@35", "deepcache-3@35"),
     ("uniform-2-skip", "uniform-2-skip"), ("router-0.70@35", "router-0.70@35"), ("soft", "soft")],
)  # fmt: skip
def test_older_names_are_aliases(old, new):
    assert canonical(old) == new


def test_each_name_builds_what_its_builder_builds(blocks):
    ts = sampler_timesteps(NOISE, 10)
    expected = {
        "full": Schedule.full(blocks, ts),
        "uniform-2": uniform_schedule(blocks, ts, 2, outer=1),
        "reuse-2": uniform_schedule(blocks, ts, 2, outer=1),
        "uniform-3-skip": uniform_schedule(blocks, ts, 3, outer=1, between=SKIP),
        "deepcache-3": deepcache_schedule(blocks, ts, 3, levels=1),
        "ase": ase_schedule(blocks, ts),
        "random": random_schedule(blocks, ts, 0.6, seed=0),
        "full@4": Schedule.full(blocks, sampler_timesteps(NOISE, 4)),
        "full-4": Schedule.full(blocks, sampler_timesteps(NOISE, 4)),
        "uniform-2@6": uniform_schedule(blocks, sampler_timesteps(NOISE, 6), 2, outer=1),
    }
    for name, want in expected.items():
        got = build_schedule(name, blocks, ts, NOISE)
        assert np.array_equal(got.actions, want.actions) and got.timesteps == want.timesteps, name
        assert got.source == want.source and got.settings == want.settings, name
    assert build_schedule("full@4", blocks, ts, NOISE).flop_ratio_vs(10) == pytest.approx(0.4)
    ddim = build_schedule("full@4", blocks, ts, NOISE, sampler="ddim")
    assert ddim.timesteps == sampler_timesteps(NOISE, 4, "ddim")


def test_options_fill_what_the_name_leaves_open(blocks):
    ts = sampler_timesteps(NOISE, 8)
    chosen = build_schedule("uniform", blocks, ts, interval=4, outer=0, between="skip")
    assert np.array_equal(chosen.actions, uniform_schedule(blocks, ts, 4, 0, SKIP).actions)
    assert build_schedule("random", blocks, ts, ratio=0.3, seed=2).settings == {"ratio": 0.3, "seed": 2}
    assert build_schedule("uniform-2", blocks, ts, interval=2, outer=None).settings["interval"] == 2
    with pytest.raises(ValueError, match="uniform-2 sets interval itself"):
        build_schedule("uniform-2", blocks, ts, interval=3)
    with pytest.raises(ValueError, match="full takes no ratio"):
        build_schedule("full", blocks, ts, ratio=0.5)
    with pytest.raises(ValueError, match="noise scheduler"):
        build_schedule("full@4", blocks, ts)


@pytest.mark.parametrize("name", ["nope", "full-25@35", "uniform-x", "deepcache-2-skip", "full@0"])
def test_unknown_names_say_what_is_known(name, blocks):
    with pytest.raises(ScheduleError, match="known: full, uniform-N|must be positive"):
        build_schedule(name, blocks, [10, 0], NOISE)


def test_a_schedule_file_is_a_method_and_samples_at_its_own_steps(blocks, tmp_path):
    ts = sampler_timesteps(NOISE, 6)
    uniform_schedule(blocks, ts, 3).save(tmp_path / "mine" / "schedule.json")
    for name in (str(tmp_path / "mine"), str(tmp_path / "mine" / "schedule.json")):
        assert parse(name).kind == "file"
        assert build_schedule(name, blocks, sampler_timesteps(NOISE, 9)).timesteps == ts
    with pytest.raises(ScheduleError, match="samples at its own 6 steps"):
        build_schedule(f"{tmp_path / 'mine'}@9", blocks, ts, NOISE)
    with pytest.raises(ScheduleError, match="the model has 2"):
        build_schedule(str(tmp_path / "mine"), ["a", "b"], ts)
    uniform_schedule(blocks, ts, 2).save(tmp_path / "router@6" / "schedule.json")  # an @ in a folder name
    assert build_schedule(str(tmp_path / "router@6"), blocks, ts).settings["interval"] == 2


def test_a_new_kind_is_one_register_call(blocks, monkeypatch):
    monkeypatch.setattr(registry, "KINDS", dict(registry.KINDS))

    @registry.register("odd", "odd-N", r"(?P<every>\d+)", ("every",))
    def odd(ctx, every):
        table = np.ones((len(ctx.blocks), len(ctx.timesteps)), dtype=bool)
        table[:, 1 :: int(every)] = False
        return Schedule(table, ctx.blocks.names, ctx.timesteps, "manual")

    built = build_schedule("odd-2@4", blocks, [10, 0], NOISE)
    assert built.num_steps == 4 and built.table[:, 1].sum() == 0 and "odd-N" in registry.known_names()
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("odd", "again")(odd)


def test_shipped_methods_build_at_any_steps_where_they_are_gates():
    if not (EMBEDDED_DIR / "unet" / "config.json").is_file():
        pytest.skip("the embedded model is not in this checkout")
    from lees import load_backbone, load_noise_scheduler

    noise = load_noise_scheduler("embedded")
    blocks = find_blocks(load_backbone("embedded"))
    assert {"lees-0.05", "router-0.70"} <= set(registry.shipped())
    gates = build_schedule("lees-0.05@20", blocks, sampler_timesteps(noise, 50), noise)
    assert gates.source == "learned" and gates.num_steps == 20
    router = build_schedule("router-0.70", blocks, sampler_timesteps(noise, 50), noise)
    assert router.source == "router" and router.timesteps == sampler_timesteps(noise, 50)


def test_pipeline_and_sampler_timesteps_agree():
    for kind in (DDPMScheduler, DDIMScheduler):
        for steps in (7, 20, 50):
            ours = sampler_timesteps(NOISE, steps, kind.__name__[:4].lower())
            assert pipeline_timesteps(kind.from_config(NOISE.config), steps) == ours


def test_every_stored_schedule_and_row_name_still_reads():
    for path in sorted([*RESULTS.rglob("schedule.json"), *EMBEDDED_DIR.rglob("schedule.json")]):
        assert parse(str(path)).kind == "file" and Schedule.load(path).num_steps > 0
    for path in sorted(RESULTS.rglob("results.json")):  # lees reproduce: the protocol's rows
        rows = json.loads(path.read_text())["methods"]
        assert {canonical(name) for name in rows} == set(METHODS), path
    for path in sorted(RESULTS.rglob("*frontier*.jsonl")):  # frontier rows: methods, or schedule files
        for line in path.read_text().splitlines():
            name = json.loads(line)["method"]
            stored = path.parent / name / "schedule.json"
            assert stored.is_file() or parse(name).name == canonical(name), (path, name)
