"""Measuring: metrics and their feature networks, fidelity to the full model, corruptions, scoring a
schedule, the held-out loss, the fewer-steps frontier, and statistics over seeds.
"""
