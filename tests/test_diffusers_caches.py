"""diffusers' own caches through lees' glue (lees.tune.diffusers_caches), on tiny model families.

Each cache either runs (finite output of the plain run's shape, less work than the plain run, the same
result when run again, the plain model back after ``remove()``) or is refused with its reason. Work is
counted inside the blocks (tests/families.py's counters) for the block caches, and as attention
computations (calls of each attention's ``to_q``) for the attention caches.
"""

import ast

import pytest
import torch
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
    apply_mag_cache,
)

from lees.tune.diffusers_caches import (
    AppliedCache,
    DenoiserCalls,
    NotApplicable,
    NotApplicableError,
    apply_cache,
    calibrate_mag_cache,
)
from lees.tune.runs import quiet_diffusers
from tests.families import FAMILIES, cache_context

STEPS = 6
BLOCK_CACHES = ("FirstBlockCache", "TaylorSeer", "MagCache")
ATTENTION_CACHES = ("PyramidAttentionBroadcast", "FasterCache")


def configs(ratios):
    """Each cache set to skip much (these are random weights: only whether work is skipped matters)."""
    return {
        "FirstBlockCache": FirstBlockCacheConfig(threshold=10.0),
        "TaylorSeer": TaylorSeerCacheConfig(
            cache_interval=2, disable_cache_before_step=1, taylor_factors_dtype=torch.float32
        ),
        "MagCache": MagCacheConfig(
            mag_ratios=ratios,
            num_inference_steps=STEPS,
            threshold=10.0,
            retention_ratio=0.0,
            max_skip_steps=2,
        ),
        "PyramidAttentionBroadcast": PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1001)
        ),
        "FasterCache": FasterCacheConfig(),
    }


def calls_of(family, guidance_scale: float) -> DenoiserCalls:
    """How the family's loop calls its model (what a user of lees tune states about their pipeline)."""
    guidance = family.guidance if guidance_scale > 1 else "none"
    order = ("cond", "uncond") if family.name.startswith("dit") else ("uncond", "cond")
    layout = {"flux": "BSC", "ltx": "BSC", "wan": "BCFHW"}.get(family.name, "BCHW")
    return DenoiserCalls(guidance, order, True, family.timestep_divisor, STEPS, layout)


# (family, guidance scale) -> {cache: a phrase of the reason it is refused}; the others run.
CASES = {
    ("dit", 4.0): {"FasterCache": "batches [cond, uncond]"},
    ("unet2d", 1.0): {
        "FirstBlockCache": "UNet2DModel has none",
        "MagCache": "UNet2DModel has none",
        "FasterCache": "nothing to hook",
    },
    ("flux", 4.0): {"PyramidAttentionBroadcast": "split guidance", "FasterCache": "split guidance"},
    ("flux", 1.0): {},
}


class Work:
    """Block bodies and attention computations run, counted live."""

    def __init__(self, family, model):
        self.blocks = family.count_block_calls(model)
        self.attention = 0
        attentions = [m.to_q for m in model.modules() if hasattr(m, "to_q")]
        self.handles = [q.register_forward_pre_hook(self._count) for q in attentions]

    def _count(self, module, args):
        self.attention += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.blocks.remove()
        for handle in self.handles:
            handle.remove()

    def of(self, method: str) -> int:
        return sum(self.blocks.values()) if method in BLOCK_CACHES else self.attention


def run(family, model, guidance_scale):
    scheduler = next(iter(family.schedulers.values()))()
    return family.loop(model, scheduler, STEPS, guidance_scale=guidance_scale)


def hooks_left(model) -> list[str]:
    return [
        n for n, m in model.named_modules() if getattr(getattr(m, "_diffusers_hook", None), "hooks", None)
    ]


@pytest.fixture(autouse=True)
def quiet():
    """FasterCache warns that it is experimental at every apply; keep test output readable."""
    with quiet_diffusers():
        yield


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: f"{c[0]}-cfg{c[1]:g}")
def test_each_cache_runs_through_the_glue_or_says_why_not(case):
    name, guidance_scale = case
    family = FAMILIES[name]
    model = family.make_model()
    calls = calls_of(family, guidance_scale)
    with Work(family, model) as plain_work:
        plain = run(family, model, guidance_scale)
    ratios = [1.0] * STEPS
    if "MagCache" not in CASES[case]:
        ratios = calibrate_mag_cache(model, calls, lambda: run(family, model, guidance_scale))
    refused = {}
    for method, config in configs(ratios).items():
        applied = apply_cache(model, config, calls)
        if isinstance(applied, NotApplicable):
            refused[method] = applied.reason
            assert hooks_left(model) == [], method
            continue
        assert isinstance(applied, AppliedCache) and applied.method == method
        with Work(family, model) as work:
            first = run(family, model, guidance_scale)
        second = run(family, model, guidance_scale)
        applied.remove()
        assert first.shape == plain.shape and torch.isfinite(first).all(), method
        assert work.of(method) < plain_work.of(method), f"{method} skipped no work"
        assert torch.equal(second, first), f"{method}: state carried over into the next run"
        assert hooks_left(model) == [] and torch.equal(run(family, model, guidance_scale), plain), method
    assert set(refused) == set(CASES[case])
    for method, phrase in CASES[case].items():
        assert phrase in refused[method], refused[method]


def test_sd3_last_block_keeps_fbc_off_and_taylorseer_away():
    """SD3's last joint block returns no encoder stream (context_pre_only): FirstBlockCache would
    subtract from None; TaylorSeer predicts the other blocks and lets that one run."""
    family = FAMILIES["sd3"]
    model = family.make_model()
    calls = calls_of(family, 4.0)
    refused = apply_cache(model, FirstBlockCacheConfig(), calls)
    assert isinstance(refused, NotApplicable) and "context_pre_only" in refused.reason
    applied = apply_cache(model, TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1), calls)
    last = f"transformer_blocks.{len(model.transformer_blocks) - 1}"
    assert last not in applied.hooked() and "transformer_blocks.0" in applied.hooked()
    assert torch.isfinite(run(family, model, 4.0)).all()
    applied.remove()


def test_faster_cache_refuses_a_call_that_would_mix_batches():
    """Declared as [uncond, cond] (DiT really batches [cond, uncond]), FasterCache still cannot run:
    class_labels carries the doubled batch and FasterCache would not halve it."""
    family = FAMILIES["dit"]
    model = family.make_model()
    calls = DenoiserCalls("batched", ("uncond", "cond"), calls_per_run=STEPS)
    config = FasterCacheConfig()
    applied = apply_cache(model, config, calls)
    assert isinstance(applied, AppliedCache)
    assert config.current_timestep_callback is None and config.attention_weight_callback is None  # untouched
    with pytest.raises(NotApplicableError, match="class_labels"):
        run(family, model, 4.0)
    applied.remove()
    assert hooks_left(model) == []


def test_mag_cache_ratios_are_those_diffusers_prints(capsys):
    family = FAMILIES["dit"]
    model = family.make_model()
    ratios = calibrate_mag_cache(model, calls_of(family, 4.0), lambda: run(family, model, 4.0))
    assert len(ratios) == STEPS and ratios[0] == 1.0 and hooks_left(model) == []
    capsys.readouterr()
    apply_mag_cache(model, MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    run(family, model, 4.0)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert ast.literal_eval(printed[-1]) == pytest.approx(ratios)


def _split_dit_loop(model, contexts: bool) -> torch.Tensor:
    """A DiT sampled with split guidance: a cond and an uncond call per step, in cache contexts or not."""
    scheduler = FAMILIES["dit"].schedulers["ddim"]()
    scheduler.set_timesteps(STEPS)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = {"cond": torch.tensor([3]), "uncond": torch.tensor([model.config.num_embeds_ada_norm])}
    for t in scheduler.timesteps:
        out = {}
        for branch, y in labels.items():
            if contexts:
                with cache_context(model, branch):
                    out[branch] = model(x, timestep=t[None], class_labels=y).sample
            else:
                out[branch] = model(x, timestep=t[None], class_labels=y).sample
        x = scheduler.step(out["uncond"] + 4.0 * (out["cond"] - out["uncond"]), t, x).prev_sample
    return x


@torch.no_grad()
def test_split_guidance_without_contexts_gets_one_state_per_branch():
    """When the loop opens no cache contexts, the glue names its calls' branches by parity: the same
    result as the loop that opens "cond" and "uncond" itself."""
    model = FAMILIES["dit"].make_model()
    results = []
    for contexts in (True, False):
        calls = DenoiserCalls("split", branch_contexts=contexts, calls_per_run=STEPS)
        applied = apply_cache(model, FirstBlockCacheConfig(threshold=0.5), calls)
        results.append(_split_dit_loop(model, contexts))
        applied.remove()
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], _split_dit_loop(model, False))  # the cache did skip something


def test_a_second_cache_or_a_bad_description_is_refused():
    model = FAMILIES["dit"].make_model()
    applied = apply_cache(model, PyramidAttentionBroadcastConfig(), DenoiserCalls())
    again = apply_cache(model, FirstBlockCacheConfig(), DenoiserCalls())
    assert isinstance(again, NotApplicable) and "already attached" in again.reason
    applied.remove()
    with pytest.raises(ValueError, match="guidance"):
        DenoiserCalls("cfg")
    with pytest.raises(ValueError, match="layout"):
        DenoiserCalls(layout="NHWC")
    with pytest.raises(TypeError, match="cache config"):
        apply_cache(model, object(), DenoiserCalls())
    assert hooks_left(model) == []


def test_mag_cache_refuses_a_run_longer_than_its_steps():
    """MagCache's step counter wraps at num_inference_steps: a run with more calls is stopped, not
    silently sampled with misaligned ratios."""
    family = FAMILIES["dit"]
    model = family.make_model()
    calls = DenoiserCalls("batched", ("cond", "uncond"), calls_per_run=STEPS - 2)
    applied = apply_cache(model, MagCacheConfig(mag_ratios=[1.0] * STEPS), calls)
    assert applied.config.num_inference_steps == STEPS - 2
    with pytest.raises(NotApplicableError, match="num_inference_steps = 4"):
        run(family, model, 4.0)
    applied.remove()
