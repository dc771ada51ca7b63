"""Stand-in for ``IPython.display`` (see the package's docstring). Any use raises."""


def __getattr__(name: str):
    raise ImportError(f"IPython.display.{name}: the device machine has no IPython (stand-in for ns-export)")
