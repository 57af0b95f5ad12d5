"""Learners: everything that optimises or searches for a schedule (gate training, the step router,
ASE's grid search), and the training of the backbones themselves.
"""
