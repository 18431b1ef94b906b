"""The study's sampler: TPE seeded per trial, so concurrent workers draw different points (docs/tuning.md)."""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int) -> int:
    """The TPE seed of trial ``number`` in a study searched with ``seed``."""
    return (int(seed) * 1_000_003 + int(number) * 7_919 + 17) % (2**32)


class PerTrialSeededTPE(optuna.samplers.BaseSampler):
    """A fresh ``TPESampler`` for each trial, seeded from ``(seed, trial number)``.

    One TPESampler(seed) per worker would make every worker draw the same points in the same order
    (all duplicates); seeding each trial by its study-wide unique number keeps a run reproducible
    for a given seed and history and gives concurrent workers different points. ``constant_liar``
    makes TPE treat the trials running elsewhere as bad, so workers spread out.
    """

    def __init__(self, seed: int, n_startup_trials: int = 10) -> None:
        self._seed, self._n_startup_trials = seed, n_startup_trials
        self._current: Optional[tuple[int, optuna.samplers.TPESampler]] = None

    def _for(self, trial: FrozenTrial) -> optuna.samplers.TPESampler:
        if self._current is None or self._current[0] != trial.number:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sampler = optuna.samplers.TPESampler(seed=trial_seed(self._seed, trial.number),
                                                     n_startup_trials=self._n_startup_trials, constant_liar=True)
            self._current = (trial.number, sampler)
        return self._current[1]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Optional[Sequence[float]]) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._current = None

    def reseed_rng(self) -> None:  # seeds come from the trial numbers
        pass


def make_sampler(seed: int, n_startup_trials: int = 10) -> PerTrialSeededTPE:
    """The sampler of a study searched with ``seed`` (TPE, random for its first ``n_startup_trials``)."""
    return PerTrialSeededTPE(seed, n_startup_trials)
