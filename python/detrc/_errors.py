"""detrc's exceptions. Each carries detrc's own message (``str(e)``) and a ``category``.

The categories follow the command's exit codes: ``usage`` errors exit 2, ``verification``
failures exit 3, everything else exits 1.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional


class Error(Exception):
    """Base class of every error detrc raises.

    Attributes:
        message: detrc's message, the same text the ``detrc`` command prints.
        category: one of ``"usage"``, ``"file"``, ``"model"``, ``"compile"``,
            ``"verification"``, ``"reference"``, ``"build"``, ``"run"``, ``"internal"``.
    """

    category = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(Error, ValueError):
    """An option detrc cannot honour: an unknown pass, an invalid target, bad shapes."""

    category = "usage"


class FileError(Error, OSError):
    """A file could not be read or written (the message names it and the cause)."""

    category = "file"


class ModelError(Error, ValueError):
    """The input is not a usable ONNX model: not protobuf, no graph, invalid or unsupported."""

    category = "model"


class CompileError(Error):
    """A pass failed or left an invalid graph (a detrc bug or an unusual model; please report)."""

    category = "compile"


class VerificationError(Error):
    """The compiled model's outputs differ from the original's; nothing was written.

    Attributes:
        verification: the figures, ``{"seed": int, "outputs": [{"name", "max_abs", "ok",
            "note"}, ...]}``.
    """

    category = "verification"

    def __init__(self, message: str, verification: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.verification = verification


class ReferenceRuntimeError(Error):
    """The CPU reference runtime (used by ``verify=True``) could not run the model."""

    category = "reference"


class BuildError(Error):
    """TensorRT-RTX could not be loaded, rejected the model, or failed to build the engine."""

    category = "build"


class RunError(Error):
    """detrc.run could not execute the model: no CUDA driver, a CUDA or TensorRT failure."""

    category = "run"


class InternalError(Error):
    """A bug in detrc (a Rust panic, caught): the interpreter keeps running. Please report."""

    category = "internal"


BY_CATEGORY = {
    c.category: c
    for c in (
        UsageError,
        FileError,
        ModelError,
        CompileError,
        VerificationError,
        ReferenceRuntimeError,
        BuildError,
        RunError,
        InternalError,
    )
}


def _make(category: str, message: str, data: Optional[str]) -> Error:
    """Called by the extension module to build the exception it raises."""
    cls = BY_CATEGORY.get(category, Error)
    if cls is VerificationError:
        return VerificationError(message, json.loads(data) if data else None)
    return cls(message)
