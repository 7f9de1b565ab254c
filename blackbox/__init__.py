"""blackbox: a flight recorder for cosmetics factories."""


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed package's metadata when asked: reading it costs
    about as much as the rest of a light command's start-up (``blackbox status``)."""
    if name != "__version__":
        raise AttributeError(f"module 'blackbox' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("blackbox")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
