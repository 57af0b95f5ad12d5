"""Policies as data: the :class:`~lees.schedules.schedule.Schedule` table, time gates, the hand-made
baselines, saving next to the model, and the registry of method names.
"""
