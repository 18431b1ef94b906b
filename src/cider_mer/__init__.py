"""cider-mer: robust multimodal emotion recognition under missing modalities and distribution shift."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cider-mer")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
