"""The model's noise process and the samplers' update rules: functions of tensors and a diffusers
scheduler config (no blocks, no schedules).
"""
