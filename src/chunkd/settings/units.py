"""Units the settings are written in."""

__all__ = ["MiB"]

MiB = 1024 * 1024
