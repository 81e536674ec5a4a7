"""Load the SQL transformations kept in `sql/*.sql` and run them with bound parameters.

The files are the package data of `seg_pipeline.sql_files` (the top-level sql/ folder in a checkout), located
with importlib.resources in settings.SQL_DIR, so the editable install and an installed wheel both find them."""

from __future__ import annotations

import hashlib
from functools import cache

from .settings import SQL_DIR


@cache
def load_sql(name: str) -> str:
    """The text of `sql/<name>.sql` (a single SELECT statement; parameters are `$name`)."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {path} is missing")
    return path.read_text(encoding="utf-8").strip().rstrip(";")


def sql_fingerprint(*names: str) -> str:
    """A short hash of the SQL files' text: part of the key that decides whether a step can be skipped."""
    h = hashlib.sha256()
    for n in names:
        h.update(load_sql(n).encode())
    return h.hexdigest()[:16]
