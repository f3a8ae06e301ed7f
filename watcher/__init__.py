"""focus-watcher: a focus-stacking daemon for 3D-scanner rigs."""

__version__ = "0.1.0"
