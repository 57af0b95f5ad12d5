"""Tuning: every way to make the user's own model faster, measured side by side at equal latency and
judged by fidelity to the full model (``lees tune``: :mod:`.tuner`). Importing it registers how a tuned
cache policy attaches (:mod:`.policy`), so ``lees.enable`` applies every kind of tuned policy."""

from . import policy as policy
