"""blackbox: a flight recorder for cosmetics factories."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blackbox")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
