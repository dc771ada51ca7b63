"""Stand-in for pymeshlab on the device machine (not installed there, too large to carry):
nerfstudio's exporter imports it at start-up; ns-export gaussian-splat never calls it. Any use raises."""


def __getattr__(name: str):
    raise ImportError(f"pymeshlab.{name}: the device machine has no pymeshlab (stand-in for ns-export gaussian-splat)")
