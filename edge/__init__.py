"""The Microplate edge appliance."""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("microplate")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
