"""Self-checks of tests/families.py (no lees): the loops are seeded, finite and call every block the
expected number of times in the expected cache contexts, with the pipeline's timestep."""

import functools
import inspect

import pytest
import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from .families import FAMILIES, cache_context, cases, count_block_calls, record_contexts, steps_for

STEPS = 3
GUIDANCE = 4.0


@functools.cache
def model_of(family: str) -> torch.nn.Module:
    return FAMILIES[family].make_model(seed=0)


def _record_timesteps(model: torch.nn.Module, seen: list) -> torch.utils.hooks.RemovableHandle:
    signature = inspect.signature(type(model).forward)

    def hook(module, args, kwargs):
        seen.append(signature.bind(module, *args, **kwargs).arguments["timestep"])

    return model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize(("family", "scheduler"), cases())
def test_loop(family, scheduler):
    fam, model = FAMILIES[family], model_of(family)
    sched = fam.schedulers[scheduler]()
    steps = steps_for(scheduler, STEPS)
    timesteps: list = []
    handle = _record_timesteps(model, timesteps)
    try:
        with count_block_calls(model) as counts, record_contexts(model) as contexts:
            out = fam.loop(model, sched, steps=steps, seed=0, guidance_scale=GUIDANCE)
    finally:
        handle.remove()
    again = fam.loop(model, fam.schedulers[scheduler](), steps=steps, seed=0, guidance_scale=GUIDANCE)

    assert torch.equal(out, again), "same seed, other latents (or the instruments changed them)"
    assert out.shape == fam.noise(model, 1, 0).shape
    assert torch.isfinite(out).all()

    per_step = fam.step_contexts(GUIDANCE)
    n = len(sched.timesteps)
    calls = n * len(per_step)
    assert n >= steps
    assert counts == {name: calls for name in fam.block_names(model)}
    assert [c.name if c is not None else None for c in contexts] == list(per_step) * n

    # the timestep the model receives: the scheduler's t, divided as the pipeline does (Flux: / 1000)
    expected = torch.repeat_interleave(sched.timesteps.double(), len(per_step)) / fam.timestep_divisor
    received = torch.stack([torch.as_tensor(t).flatten()[0].double() for t in timesteps])
    torch.testing.assert_close(received, expected, rtol=1e-6, atol=1e-6)
    if family == "wan":  # WanPipeline also passes the step index and sigma
        assert [c.step_index for c in contexts] == [i for i in range(n) for _ in per_step]
        assert [c.sigma for c in contexts] == [float(sched.sigmas[i]) for i in range(n) for _ in per_step]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_seed_and_guidance_matter(family):
    fam, model = FAMILIES[family], model_of(family)
    make = next(iter(fam.schedulers.values()))
    base = fam.loop(model, make(), steps=STEPS, seed=0, guidance_scale=GUIDANCE)
    assert not torch.equal(base, fam.loop(model, make(), steps=STEPS, seed=1, guidance_scale=GUIDANCE))
    if fam.guidance == "none":
        return
    with count_block_calls(model) as counts, record_contexts(model) as contexts:
        unguided = fam.loop(model, make(), steps=STEPS, seed=0, guidance_scale=1.0)
    assert not torch.equal(base, unguided)
    assert set(counts.values()) == {len(contexts)}
    if fam.guidance == "split":  # one call per step, in the "cond" context
        assert fam.calls_per_step(1.0) == 1
        assert {c.name for c in contexts} == {"cond"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batch_of_two(family):
    fam, model = FAMILIES[family], model_of(family)
    make = next(iter(fam.schedulers.values()))
    out = fam.loop(model, make(), steps=2, seed=0, guidance_scale=GUIDANCE, batch=2)
    assert out.shape == fam.noise(model, 2, 0).shape
    assert torch.isfinite(out).all()


class _ReplayHook(ModelHook):
    """Runs the block once, then returns its first output (as a reuse would) without running it."""

    def __init__(self):
        super().__init__()
        self.output = None

    def new_forward(self, module, *args, **kwargs):
        if self.output is None:
            self.output = self.fn_ref.original_forward(*args, **kwargs)
        return self.output


@pytest.mark.parametrize("family", list(FAMILIES))
def test_counter_sits_inside_the_block(family):
    """A block whose forward a HookRegistry hook bypasses is not counted; a block pre-hook would be."""
    fam = FAMILIES[family]
    model = fam.make_model(seed=0)
    names = fam.block_names(model)
    replayed = names[1]
    block = model.get_submodule(replayed)
    HookRegistry.check_if_exists_or_initialize(block).register_hook(_ReplayHook(), "replay")
    outer = []
    block.register_forward_pre_hook(lambda module, args: outer.append(1))
    sched = next(iter(fam.schedulers.values()))()
    with count_block_calls(model) as counts:
        fam.loop(model, sched, steps=STEPS, seed=0, guidance_scale=GUIDANCE)
    calls = len(sched.timesteps) * fam.calls_per_step(GUIDANCE)
    assert len(outer) == calls
    assert counts[replayed] == 1
    assert all(counts[name] == calls for name in names if name != replayed)


def test_cache_context_without_cache_mixin():
    """DiT has no cache_context: the helper sets the context on its stateful hooks all the same."""
    model = FAMILIES["dit"].make_model()
    assert not hasattr(model, "cache_context")
    x = torch.zeros(2, 4, 8, 8)
    with record_contexts(model) as contexts:
        with cache_context(model, "uncond", step_index=3):
            model(x, timestep=torch.tensor([5, 5]), class_labels=torch.tensor([0, 10]))
        model(x, timestep=torch.tensor([5, 5]), class_labels=torch.tensor([0, 10]))
    assert [(c.name, c.step_index) for c in contexts[:1]] == [("uncond", 3)]
    assert contexts[1] is None


def test_make_model_is_seeded_and_leaves_the_global_rng():
    fam = FAMILIES["flux"]
    state = torch.random.get_rng_state()
    a, b, c = fam.make_model(0), fam.make_model(0), fam.make_model(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert not a.training
