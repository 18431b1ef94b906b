"""Counting a study's trials the way ``cider tune`` does (docs/tuning.md, "Resuming and counting")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from cider_mer.tuning.space import Param, params_key

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


@dataclass
class Census:
    """What the study holds, as the tuning counts it."""

    finished: list[FrozenTrial]  # first trial of each distinct finished (COMPLETE/PRUNED) parameter set
    running: list[FrozenTrial]  # RUNNING trials that were not skipped
    waiting: list[FrozenTrial]  # queued trials (retries of crashed ones, or enqueued by hand)

    @property
    def done(self) -> int:
        return len(self.finished)

    @property
    def claimed(self) -> int:
        return len(self.finished) + len(self.running) + len(self.waiting)

    def before(self, number: int) -> int:
        """Finished trials plus the running or queued ones numbered below ``number``."""
        return self.done + sum(1 for t in self.running + self.waiting if t.number < number)

    def finished_like(self, key: Optional[tuple], number: int, space: Sequence[Param]) -> Optional[FrozenTrial]:
        """The finished trial (other than ``number``) whose parameter set is ``key``, if any."""
        return next((t for t in self.finished if t.number != number and params_key(t.params, space) == key), None)

    def running_like(self, key: Optional[tuple], number: int, space: Sequence[Param]) -> Optional[FrozenTrial]:
        """The lowest-numbered trial running below ``number`` whose parameter set is ``key``, if any."""
        return next((t for t in self.running if t.number < number and params_key(t.params, space) == key), None)


def take_census(study: optuna.Study, space: Sequence[Param]) -> Census:
    from optuna.trial import TrialState

    finished: list[FrozenTrial] = []
    running: list[FrozenTrial] = []
    waiting: list[FrozenTrial] = []
    seen: set[tuple] = set()
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            key = params_key(t.params, space)
            if "duplicate_of" in t.user_attrs or key is None or key in seen:
                continue
            seen.add(key)
            finished.append(t)
        elif t.state == TrialState.RUNNING and "skipped" not in t.user_attrs:
            running.append(t)
        elif t.state == TrialState.WAITING:
            waiting.append(t)
    return Census(finished, running, waiting)


def best_trial(study: optuna.Study) -> Optional[FrozenTrial]:
    """The COMPLETE trial with the best value for the study's direction (lowest number on ties), or None."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    sign = -1.0 if study.direction.name == "MINIMIZE" else 1.0
    return max(done, key=lambda t: (sign * t.value, -t.number)) if done else None
