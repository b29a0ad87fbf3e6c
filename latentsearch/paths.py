"""Where collections live on disk, and which collection names are allowed."""

from __future__ import annotations

import os
import re
from pathlib import Path

from latentsearch.errors import InvalidInputError

HOME_ENV = "LATENTSEARCH_HOME"
DEFAULT_HOME = "indexes"
# Names become folder names: letters, digits, '_', '-', '.', never a path or a dot-file. Matched whole
# (fullmatch): with match and "$", a trailing newline would pass.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory: ``home``, else ``$LATENTSEARCH_HOME``, else ``./indexes``."""
    chosen = home if home is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid collection name, else raise a clear error."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidInputError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no paths)"
        )
    return name


def collection_dir(name: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder of collection ``name`` under the data directory."""
    return resolve_home(home) / validate_name(name)
