"""Pages of a list: opaque cursors, keyset pages read from a view, and pages of a list made whole.

A cursor names the last item of the page before (its position, version or key), never an offset,
so that items added or gone before it shift nothing.
"""

import base64
import binascii
from collections.abc import Callable
from typing import Any

from domain.errors import InvalidInput


def keyset_page(rows: list, limit: int, key: Callable[[Any], int]) -> tuple[list, str | None]:
    """The page of `rows`, read one more than `limit` to learn whether more follow, and the cursor
    of the next page (None: this is the last)."""
    page = rows[:limit]
    return page, encode_cursor(key(page[-1])) if len(rows) > limit else None


def encode_cursor(value: int) -> str:
    return _opaque(f"v1:{value}")


def decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    prefix, _, value = _plain(cursor).partition(":")
    if prefix == "v1" and value.isascii() and value.isdigit() and len(value) <= 18:  # not "²": int() refuses it
        return int(value)
    raise InvalidInput("cursor", "is not a cursor this list gave out")


def paged(items: list[dict[str, Any]], key: str, limit: int | None, cursor: str | None) -> tuple[list, str | None]:
    """A page of a list made whole for each request (reference data, reports), in order of `key`
    (an item without one last): the items after the one the cursor names, so that an item added or
    gone before it between two pages shifts nothing. Without `limit`, the rest of the list, as a
    spreadsheet export wants it."""
    keys = [item[key] for item in items]
    start = 0 if cursor is None else _after(keys, _decode_key(cursor))
    if limit is None:
        return items[start:], None
    page = items[start:start + limit]
    more = start + limit < len(items)
    return page, _encode_key(page[-1][key]) if more else None


def _after(keys: list[str | None], last: str | None) -> int:
    """Where a page starts after the item keyed `last`, even if that item has gone since."""
    if last in keys:
        return keys.index(last) + 1
    return len(keys) if last is None else next((n for n, k in enumerate(keys) if k is None or k > last), len(keys))


def _encode_key(value: str | None) -> str:
    return _opaque("k0:" if value is None else f"k1:{value}")


def _decode_key(cursor: str) -> str | None:
    text = _plain(cursor)
    if text == "k0:":
        return None
    if text.startswith("k1:"):
        return text[3:]
    raise InvalidInput("cursor", "is not a cursor this list gave out")


def _opaque(text: str) -> str:
    """A cursor's text as clients see it: base64 without padding, so that they take it as it is."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _plain(cursor: str) -> str:
    """A cursor's text again; "" for what no cursor of ours could be."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""
