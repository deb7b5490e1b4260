"""Errors raised by the detection package.

Every message is written for the person who has to fix the problem: it says what is wrong and
what to do about it, so the CLI and the appliance can show it as is (never a stack trace).
"""

from __future__ import annotations


class DetectorError(RuntimeError):
    """A detector cannot start or cannot run (model, runtime, engine)."""


class ModelError(DetectorError):
    """The model directory is missing, incomplete, corrupt or inconsistent."""


class BackendUnavailable(DetectorError):
    """The runtime a backend needs (TensorRT, pycuda, a GPU) is not installed or not usable."""


class ImageDecodeError(ValueError):
    """One image cannot be decoded; only the run for that image fails."""
