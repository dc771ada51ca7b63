"""Stand-in for IPython on the device machine (not installed there): mediapy, which nerfstudio's
exporter imports, imports ``IPython.display`` at start-up; ns-export gaussian-splat never shows
anything in a notebook."""
