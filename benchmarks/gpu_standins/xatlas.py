"""Stand-in for xatlas on the device machine (not installed there): nerfstudio's exporter imports it
at start-up; ns-export gaussian-splat never calls it. Any use raises."""


def __getattr__(name: str):
    raise ImportError(f"xatlas.{name}: the device machine has no xatlas (stand-in for ns-export gaussian-splat)")
