"""The ``cider`` command line. Each command wraps a function of the Python API.

Errors a user can fix (bad files, unknown names, mismatched shapes) end with one line on stderr
and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from cider_mer.cli import ablate_cmds, data_cmds, model_cmds, plot_cmds, run_cmds, tune_cmds

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="cider-mer: robust multimodal emotion recognition (CIDer, MACI).")
app.add_typer(data_cmds.app, name="data", help="Create, import, check and re-split dataset files.")
app.add_typer(plot_cmds.plot_app, name="plot", help="Pictures of a trained run (embeddings, MACI).")
app.add_typer(plot_cmds.maci_app, name="maci", help="Inspect MACI's counterfactual vocabulary.")
model_cmds.register(app)
run_cmds.register(app)
tune_cmds.register(app)
ablate_cmds.register(app)


class UserError(Exception):
    """Raised by commands for conditions the user can fix; printed as one line, exit 2."""


def _user_error_types() -> tuple[type, ...]:
    from cider_mer.data.dataset import DatasetError
    from cider_mer.data.safe_pickle import UnsafePickleError
    from cider_mer.missing import MissingModeError
    from cider_mer.text.encoder import EncoderNotFoundError

    return (UserError, DatasetError, UnsafePickleError, MissingModeError, EncoderNotFoundError, FileNotFoundError,
            ValueError)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cider`` console script."""
    import os

    try:
        code = app(args=argv, standalone_mode=False)
    except _user_error_types() as exc:
        if os.environ.get("CIDER_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        # Usage errors of the command-line parser know how to show themselves and their exit code.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code != 0:
        sys.exit(code)
