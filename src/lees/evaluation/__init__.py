"""Measuring: metrics and their feature networks, corruptions, scoring a schedule, the held-out
loss, the fewer-steps frontier, and statistics over seeds.
"""
