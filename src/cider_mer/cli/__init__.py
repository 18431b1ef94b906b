"""The ``cider`` command line. Each command wraps a function of the Python API.

Errors a user can fix (the project's :class:`~cider_mer.errors.CiderError`: bad files, unknown
names, mismatched shapes; and a file that does not exist) end with one line on stderr and exit
code 2. Ctrl-C ends with exit code 130. Anything else is a bug and keeps its traceback, including
an end of file that a reader did not turn into a CiderError (which typer would report as an
abort with exit code 130, as if the user had interrupted).
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from cider_mer.cli import (ablate_cmds, bench_cmds, data_cmds, feature_cmds, model_cmds, plot_cmds, predict_cmds,
                           run_cmds, tune_cmds)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="cider-mer: robust multimodal emotion recognition (CIDer, MACI).")
app.add_typer(data_cmds.app, name="data", help="Create, import, check and re-split dataset files.")
app.add_typer(plot_cmds.plot_app, name="plot", help="Pictures of a trained run (embeddings, MACI).")
app.add_typer(plot_cmds.maci_app, name="maci", help="Inspect MACI's counterfactual vocabulary.")


@app.callback()
def _global_options(
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads of torch for this command (>= 1). "
                                          "Default: OMP_NUM_THREADS when set, else torch's default; tuning "
                                          "workers use 1."),
) -> None:
    if threads is not None:
        from cider_mer.threads import set_threads

        if threads < 1:
            raise typer.BadParameter(f"must be >= 1, got {threads}", param_hint="'--threads'")
        set_threads(threads)


model_cmds.register(app)
run_cmds.register(app)
predict_cmds.register(app)
tune_cmds.register(app)
ablate_cmds.register(app)
bench_cmds.register(app)
feature_cmds.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cider`` console script."""
    import os

    from cider_mer.errors import CiderError
    from cider_mer.io_utils import set_command_line

    set_command_line(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=argv, standalone_mode=False)
    except (CiderError, FileNotFoundError) as exc:
        if os.environ.get("CIDER_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # no command prompts: a reader let an end of file through
            raise exc.__cause__
        print("interrupted", file=sys.stderr)  # Ctrl-C, where typer reports it as an abort
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
