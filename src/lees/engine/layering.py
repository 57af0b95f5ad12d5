"""lees' hooks beneath everyone else's, whichever was enabled first.

Beside lees, a denoiser may carry diffusers' caches (FirstBlockCache, FasterCache, ...) and group
offloading, hooks in the same ``HookRegistry`` as lees' own, and accelerate's model CPU offload, which
wraps the forward outside any registry. Those decide whether a block runs at all and where its weights
are; lees decides how a block that runs computes. So lees' hooks belong innermost, and
:func:`beneath_other_hooks` puts them there while lees registers or removes its hooks:

* diffusers' hooks on the same modules are taken off, outermost first, and put back in their order
  after. ``HookRegistry.remove_hook`` only removes a hook cleanly from the outside: a hook removed from
  beneath one that has its own ``new_forward`` takes that forward with it (diffusers 0.42), which would
  silently turn FirstBlockCache off when lees is disabled, or lees off when FirstBlockCache is.
* accelerate's hook is lifted off the denoiser and put back on top. Registered above it, lees' root hook
  would be dropped at the end of the first pipeline run, when the pipeline's ``maybe_free_model_hooks``
  re-applies the offload and restores the forward accelerate found.

Re-registering a diffusers hook runs its ``initialize_hook`` again, as enabling it did.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

PREFIX = "lees."  # every hook lees registers is named lees.*


def _lift(module: nn.Module) -> list[tuple[str, ModelHook]]:
    """Take every hook off ``module``'s registry (outermost first), put lees' own back; return the others
    in their order. Nothing changes where only lees' hooks are there."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None:
        return []
    hooks = [(name, registry.hooks[name]) for name in registry._hook_order]
    if all(name.startswith(PREFIX) for name, _ in hooks):
        return []
    for name, _ in reversed(hooks):
        registry.remove_hook(name, recurse=False)
    for name, hook in hooks:
        if name.startswith(PREFIX):
            registry.register_hook(hook, name)
    return [(name, hook) for name, hook in hooks if not name.startswith(PREFIX)]


@contextmanager
def _beneath_accelerate(model: nn.Module) -> Iterator[None]:
    hook = getattr(model, "_hf_hook", None)
    if hook is None:
        yield
        return
    from accelerate.hooks import add_hook_to_module, remove_hook_from_module

    remove_hook_from_module(model)
    try:
        yield
    finally:
        add_hook_to_module(model, hook)


@contextmanager
def beneath_other_hooks(model: nn.Module, modules: Sequence[nn.Module]) -> Iterator[None]:
    """Within, lees registers or removes its hooks on ``model`` and ``modules`` (its blocks) as if no
    other hook were there; after, the others wrap lees' again in their order (see the module doc). The
    cached child registries of ``model`` are invalidated, so ``cache_context`` reaches every hook."""
    with _beneath_accelerate(model):
        lifted = [(module, _lift(module)) for module in (model, *modules)]
        try:
            yield
        finally:
            for module, hooks in lifted:
                for name, hook in hooks:
                    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
    registry = getattr(model, "_diffusers_hook", None)
    if registry is not None:
        registry.invalidate_child_registries_cache()
