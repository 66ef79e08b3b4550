"""Cursor pagination shared by every list query.

A cursor is the id of the last item of the previous page. Ids are
time-ordered (:mod:`tongbao.ids`), so "newest first" is "id descending" and a
cursor stays valid while new items arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tongbao import errors

T = TypeVar("T")

MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None
    """Pass as ``cursor`` to get the next page; ``None`` on the last page."""


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise errors.ValidationFailed(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    return limit


def page_of(items: Sequence[T], limit: int, key: Callable[[T], str]) -> Page[T]:
    """Build a page from up to ``limit + 1`` fetched items (the extra one only
    tells that another page exists)."""
    kept = tuple(items[:limit])
    return Page(kept, key(kept[-1]) if len(items) > limit else None)
