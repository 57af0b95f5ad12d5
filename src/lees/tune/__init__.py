"""Tuning: every way to make the user's own model faster, measured side by side at equal latency and
judged by fidelity to the full model (``lees tune``). Here so far: diffusers' own caches as candidates."""
