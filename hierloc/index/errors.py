"""Exceptions raised by the descriptor index package."""

from __future__ import annotations

import json
import os
from typing import Any


class IndexValidationError(ValueError):
    """The contents of a DescriptorIndex (or its parts) are inconsistent or invalid."""


class IndexCompatibilityError(ValueError):
    """An index does not fit the model, descriptors or other index it is used with."""


class IndexFormatError(ValueError):
    """An index file cannot be read: empty, truncated, corrupt, foreign or inconsistent."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # the default would call __init__ with the formatted message only
        return (type(self), (self.path, self.problem))


def parse_metadata_json(text: str, path: str | os.PathLike) -> dict[str, Any]:
    """An index's stored metadata (JSON text) as a dict, or IndexFormatError naming the file (both formats)."""
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IndexFormatError(path, f"metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise IndexFormatError(path, f"metadata must be a JSON object, got {type(metadata).__name__}")
    return metadata
