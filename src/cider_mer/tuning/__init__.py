"""Hyper-parameter search with Optuna (SPEC §8): TPE over the paper's Table II space, on the
validation split, resumable, shareable among many workers through one database.

- :func:`cider_mer.tuning.search.tune`: run or continue a study (``cider tune`` wraps it);
- :data:`cider_mer.tuning.space.TABLE_II`: the search space; :func:`~cider_mer.tuning.space.apply_params`;
- :func:`cider_mer.tuning.storage.open_storage`: a study database from a URL, with heartbeats.
"""
