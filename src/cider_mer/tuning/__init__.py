"""Hyper-parameter search with Optuna (SPEC §8): TPE over the paper's Table II space, on the
validation split, resumable, shareable among many workers through one database.

- :func:`cider_mer.tuning.search.tune`: run or continue a study (``cider tune`` wraps it);
- :data:`cider_mer.tuning.space.TABLE_II`: the search space; :func:`~cider_mer.tuning.space.apply_params`;
- :func:`cider_mer.tuning.storage.open_storage`: a study database from a URL, with heartbeats;
- :mod:`~cider_mer.tuning.sampler`, :mod:`~cider_mer.tuning.census`, :mod:`~cider_mer.tuning.settings`
  (:class:`~cider_mer.tuning.settings.TuneError`), :mod:`~cider_mer.tuning.trial` (one trial and its
  :class:`~cider_mer.tuning.trial.Outcome`), :mod:`~cider_mer.tuning.heartbeat`, :mod:`~cider_mer.tuning.output`:
  the parts of the search.
"""
