"""cider-mer: robust multimodal emotion recognition under missing modalities and distribution shift.

``cider_mer.load_run(path)`` rebuilds a trained run that can predict (imported lazily, so that
``import cider_mer`` stays light).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cider-mer")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["load_run", "__version__"]


def __getattr__(name: str):
    if name == "load_run":
        from cider_mer.runs import load_run

        return load_run
    raise AttributeError(f"module 'cider_mer' has no attribute '{name}'")
