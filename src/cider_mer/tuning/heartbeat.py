"""A running trial's heartbeat, recorded from a background thread (docs/tuning.md, "Interruptions")."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.storages import RDBStorage


class Heartbeat:
    """Record the trial's heartbeat now and then every ``interval`` seconds until the block ends."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval: int) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # a lost connection: try again next time, the trial goes on
                pass
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
