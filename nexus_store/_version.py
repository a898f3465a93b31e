"""The release, in a leaf module: the health report reads it without importing the package."""

__version__ = "0.1.0"
