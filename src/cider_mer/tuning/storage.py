"""Opening an Optuna study storage from a URL, with heartbeats and one-line errors.

- ``sqlite:///DIR/study.db`` (the default, inside the tuning folder): one machine;
- ``postgresql://user:password@host:5432/db`` (or MySQL, or any SQLAlchemy URL Optuna accepts):
  one study shared by many worker processes on many machines.

Every storage is an :class:`optuna.storages.RDBStorage` with a heartbeat: a worker records a
heartbeat for its running trial every ``heartbeat_interval`` seconds; a RUNNING trial whose
heartbeat is older than ``grace_period`` (its process died, or its machine went away) is marked
FAIL by the next worker that looks, and a copy with the same parameters is queued (WAITING) so
another worker trains it.
"""

from __future__ import annotations

import importlib.util
import inspect
import random
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from cider_mer.errors import CiderError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

EXPECTED = "expected sqlite:///path/to/study.db or postgresql://user:password@host:5432/database"


class StorageError(CiderError):
    """A storage URL that cannot be used (malformed, unknown database, missing driver, unreachable)."""


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and files)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(url))


def default_storage_url(out_dir: str | Path) -> str:
    return f"sqlite:///{(Path(out_dir).resolve() / 'study.db').as_posix()}"


def _with_installed_driver(url: Any) -> Any:
    """``postgresql://`` without a driver means psycopg 3 in SQLAlchemy 2.1 but psycopg2 before;
    pick whichever of the two is installed, so the URL works with either."""
    if url.drivername != "postgresql":
        return url
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return url.set(drivername=driver)
    return url


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = str(orig).strip()
    return text.splitlines()[0].strip() if text else type(orig).__name__


class RetryCrashedTrial:
    """Queue a crashed trial's parameters again (state WAITING), at most ``max_retry`` times.

    Optuna's RetryHeartbeatStaleTrialCallback (RetryFailedTrialCallback before 4.9) does the same
    but also copies the dead trial's user attributes (its run folder, host, error) into the new
    one; this keeps the new trial clean and notes ``retry_of`` instead. The system attributes
    ``failed_trial`` and ``retry_history`` follow Optuna's, so its helpers read them.
    """

    def __init__(self, max_retry: Optional[int] = 3) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        import optuna

        history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
        if self.max_retry is not None and len(history) > self.max_retry:
            return
        if not trial.params:  # closed before it had parameters: nothing to repeat
            return
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={"retry_of": trial.number},
            system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                          "retry_history": history}))


def open_storage(url: str, heartbeat_interval: int = 60, grace_period: Optional[int] = None) -> RDBStorage:
    """An RDBStorage for ``url`` with heartbeat and retry of crashed trials; raises StorageError."""
    import optuna
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = mask_url(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(f"storage '{shown}' is not a database URL; {EXPECTED}") from None
    parsed = _with_installed_driver(parsed)
    backend = parsed.get_backend_name()
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(f"storage '{shown}': unknown database type '{parsed.drivername}'; {EXPECTED} "
                           "(any SQLAlchemy URL Optuna accepts)") from None
    except ImportError as exc:
        raise StorageError(f"storage '{shown}': the database driver is not installed ({_first_line(exc)}); "
                           "for PostgreSQL: pip install 'cider-mer[postgres]'") from None
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not Path(db).expanduser().resolve().parent.is_dir():
            raise StorageError(f"storage '{shown}': the folder of the SQLite file does not exist; {EXPECTED}")
    else:
        # Trials can run for hours between two writes: test pooled connections before use.
        engine_kwargs["pool_pre_ping"] = True
        if backend == "postgresql" and parsed.get_driver_name() in ("psycopg2", "psycopg"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    kwargs: dict[str, Any] = {"heartbeat_interval": int(heartbeat_interval), "grace_period": grace_period}
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    # Optuna >= 4.9 names it heartbeat_stale_trial_callback; earlier versions failed_trial_callback.
    callback_arg = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
                    else "failed_trial_callback")
    kwargs[callback_arg] = RetryCrashedTrial()
    try:
        for attempt in range(6):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Optuna flags heartbeats and the retry callback "experimental"
                    return optuna.storages.RDBStorage(parsed.render_as_string(hide_password=False),
                                                      engine_kwargs=engine_kwargs, **kwargs)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers started together on an empty database all create Optuna's tables; the
                # losers of that race see "duplicate key" errors. The tables exist now: try again.
                if attempt == 5:
                    raise
                time.sleep(0.2 + random.random() * (attempt + 1))
        raise AssertionError("unreachable")
    except ImportError as exc:
        raise StorageError(f"storage '{shown}': the database driver for '{parsed.drivername}' is not installed "
                           f"({_first_line(exc)}); for PostgreSQL: pip install 'cider-mer[postgres]'") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"storage '{shown}': cannot open the database ({_first_line(exc)}); expected a "
                           "reachable server with an existing database (and the right user/password)") from None
    except (RuntimeError, ValueError) as exc:  # e.g. a schema written by another Optuna version
        raise StorageError(f"storage '{shown}': {_first_line(exc)}") from None
