"""Helpers that import nothing else of lees: atomic file writes, picture grids, torchrun processes,
timing.
"""
