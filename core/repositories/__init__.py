"""Data access, one module per aggregate: users and their keys, predictions and their images.

Model versions have theirs in `models.registry` (with the model store).
Every function takes an open session: the caller's unit of work decides
when it commits.
"""
