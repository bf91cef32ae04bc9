"""umtune: Universal Music Translation networks, trained and swept on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("umtune")
except PackageNotFoundError:  # run from a checkout that was never installed (gpu_check)
    __version__ = "unknown"
