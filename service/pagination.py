"""Opaque keyset cursors.

A cursor encodes the sort it was made for and the (sort key, id) of the last row of the page;
the next page is ``WHERE (key, id) > (k, i)`` (or ``<`` descending), so rows inserted while a
client pages never shift or duplicate what it has not seen yet (OFFSET would). The encoding is
base64url JSON: opaque to clients, not a secret, validated on the way back in.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from .errors import Invalid


@dataclass(frozen=True)
class Cursor:
    sort: str
    key: Any
    id: int

    def encode(self) -> str:
        key = self.key.isoformat() if isinstance(self.key, datetime) else self.key
        raw = json.dumps({"s": self.sort, "k": key, "i": self.id}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: str, key_type: type) -> Cursor:
        try:
            pad = "=" * (-len(text) % 4)
            data = json.loads(base64.urlsafe_b64decode(text + pad))
            if not isinstance(data, dict) or not isinstance(data.get("i"), int):
                raise ValueError
            key = data.get("k")
            if key_type is datetime:
                if not isinstance(key, str):
                    raise ValueError
                key = datetime.fromisoformat(key)
            elif key_type is int and (not isinstance(key, int) or isinstance(key, bool)):
                raise ValueError
            if data.get("s") != sort:
                raise Invalid.field(
                    "cursor", f"cursor was made for sort={data.get('s')!r}, not sort={sort!r}"
                )
            return cls(sort, key, data["i"])
        except Invalid:
            raise
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise Invalid.field(
                "cursor", "malformed cursor (pass next_cursor back unchanged)"
            ) from None


def after(column: Any, id_column: Any, cursor: Cursor, descending: bool) -> ColumnElement[bool]:
    """Rows strictly after the cursor in ``ORDER BY column, id`` (both in one direction)."""
    if descending:
        return or_(column < cursor.key, and_(column == cursor.key, id_column < cursor.id))
    return or_(column > cursor.key, and_(column == cursor.key, id_column > cursor.id))
