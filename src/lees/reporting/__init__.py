"""The paper's protocol and what people read: the protocol's methods, the claims and their rules, the
report, plots, ``lees reproduce`` and ``lees demo``.
"""
