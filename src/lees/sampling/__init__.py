"""Running samplers with schedules: several methods side by side with paired timing (``lockstep``),
and long runs stored in resumable pieces (``stored``).
"""
