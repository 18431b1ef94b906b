"""The benchmark: the paper's Table IV (models x {RMFM on IID, complete OOD, RMFM on OOD}) and
Table VI (parameters, peak memory, seconds per epoch) over the model zoo, as one resumable suite.

:mod:`.plan` says what runs (rows, settings, training data), :mod:`.resources` measures peak
memory, :mod:`.table` rebuilds the typed :class:`~.table.BenchmarkTable` from the run folders,
:mod:`.render` writes it, and :mod:`.suite` runs the grid through the ablation suite's
:func:`~cider_mer.ablation.run.run_one`.
"""

__all__ = ["run_benchmark", "default_base_config", "BenchmarkTable"]


def __getattr__(name):  # the suite pulls in torch and the trainer: import it only when asked
    if name in ("run_benchmark", "default_base_config"):
        from cider_mer.benchmark import suite

        return getattr(suite, name)
    if name == "BenchmarkTable":
        from cider_mer.benchmark.table import BenchmarkTable

        return BenchmarkTable
    raise AttributeError(name)
