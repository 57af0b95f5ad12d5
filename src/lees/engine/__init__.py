"""What happens inside one denoiser call: block actions (run, reuse, skip), the blocks of a backbone
and their FLOPs, and the hooks that carry out per-call decisions. The engine takes decisions, never
schedules (those live one layer up, in :mod:`lees.schedules`).
"""
