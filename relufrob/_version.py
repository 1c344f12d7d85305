"""relufrob's version, read by the package and by setup.py."""

__version__ = "0.1.0"
