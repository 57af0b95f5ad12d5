"""lees tune's candidates: every option as data, and why each cannot apply to a model (no measurement)."""

import pytest
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from lees.tune.candidates import CACHE_GRIDS, KINDS, Candidate, candidates
from lees.tune.diffusers_caches import DenoiserCalls
from lees.tune.runs import quiet_diffusers
from tests.families import DDPM_BETAS, FAMILIES


@pytest.fixture(autouse=True)
def quiet():
    """Attaching caches prints diffusers' notices; keep test output readable."""
    with quiet_diffusers():
        yield


def test_every_kind_and_cache_setting_is_listed_once():
    found = candidates(20)
    assert {c.kind for c in found} == set(KINDS) - {"schedule"}  # schedule files only where named
    assert len({c.name for c in found}) == len(found)
    steps = {c.settings["steps"] for c in found if c.kind == "steps"}
    assert steps == {15, 10, 7, 5}  # 0.75, 0.5, 0.35, 0.25 of 20
    caches = [c for c in found if c.kind == "cache"]
    assert len(caches) == sum(len(grid) for grid in CACHE_GRIDS.values())
    assert caches[0].cache_config().threshold == 0.02
    quick = candidates(20, ("ddpm", "ddim", "dpm++", "unipc"), quick=True)
    assert [c.name for c in quick if c.kind == "steps"] == [
        "ddpm@10",
        "ddpm@6",
        "ddim@10",
        "ddim@6",
        "dpm++@10",
        "dpm++@6",
    ]
    assert len([c for c in quick if c.kind == "cache"]) == sum(
        len(grid[1:3]) for grid in CACHE_GRIDS.values()
    )
    with pytest.raises(ValueError, match="at least 2"):
        candidates(1)
    with pytest.raises(ValueError, match="kind"):
        Candidate("prune", "x")


def reasons(model, scheduler, calls):
    return {c.name: c.applies_to(model, scheduler, calls) for c in candidates(8)}


def test_reasons_on_a_unet_and_a_dit():
    unet, dit = FAMILIES["unet2d"].make_model(), FAMILIES["dit"].make_model()
    ddim = DDIMScheduler(**DDPM_BETAS)
    on_unet = reasons(unet, ddim, DenoiserCalls(calls_per_run=8))
    assert on_unet["deepcache-3"] is None and on_unet["uniform-3"] is None and on_unet["router@0.7"] is None
    assert "UNet2DModel has none" in on_unet["FirstBlockCache(threshold=0.05)"]
    assert on_unet["TaylorSeer(cache_interval=2, disable_cache_before_step=3)"] is None
    assert on_unet["dpm++@4"] is None and on_unet["pndm@4"] is None
    on_dit = reasons(dit, ddim, DenoiserCalls("batched", ("cond", "uncond"), calls_per_run=8))
    assert "no UNet" in on_dit["deepcache-3"] and on_dit["uniform-3"] is None
    assert on_dit["MagCache(threshold=0.06)"] is None
    assert "[cond, uncond]" in on_dit["FasterCache(spatial_attention_block_skip_range=2)"]
    assert not hasattr(dit, "_diffusers_hook") or not dit._diffusers_hook.hooks  # checks leave no hooks


def test_reasons_on_flow_matching_flux():
    flux = FAMILIES["flux"].make_model()
    calls = DenoiserCalls("split", timestep_scale=1000.0, calls_per_run=8, layout="BSC")
    on_flux = reasons(flux, FlowMatchEulerDiscreteScheduler(), calls)
    assert on_flux["euler@4"] is None and on_flux["unipc@4"] is None
    assert "no solver of a flow-family model" in on_flux["ddim@4"]
    assert "packed latents" in on_flux["router@0.7"]
    assert "split guidance" in on_flux["PyramidAttentionBroadcast(spatial_attention_block_skip_range=2)"]
    assert on_flux["FirstBlockCache(threshold=0.05)"] is None
