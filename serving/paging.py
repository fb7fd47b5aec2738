"""Cursors for the paged lists (``/winback``, ``GET /triggers``).

A cursor is opaque to a client: base64url of what the next page needs (where it starts) and of
what it pages through (the served model version and snapshot id, and the filters or the day).
Pages are cut from one ranking only: a cursor made for another model or snapshot (after a
champion swap, or from a worker still serving the previous one) or for other filters is refused
with a 409 saying to start again from the first page, so a client never gets a list made of two
models. A snapshot never changes once scored, so an offset into its ranking is exact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import orjson

#: What a cursor looks like in the OpenAPI document (and what is refused with a 400 otherwise).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,512}$"


class StaleCursor(ValueError):
    """A cursor this service cannot continue: another model or snapshot, other filters, or not a cursor."""


def scope_of(*parts: object) -> str:
    """A short digest of what a list pages through (filters, a day), bound into its cursors."""
    return hashlib.blake2b(orjson.dumps(parts, option=orjson.OPT_NON_STR_KEYS), digest_size=6).hexdigest()


def make_cursor(kind: str, tag: str, scope: str, position: object) -> str:
    """The cursor of the page starting at ``position`` of list ``kind`` under ``tag`` and ``scope``."""
    payload = orjson.dumps([kind, tag, scope, position])
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def read_cursor(text: str, kind: str, tag: str, scope: str) -> object:
    """Where the page of ``text`` starts, after checking it was made for this list; raises
    :class:`StaleCursor` with a message a client can act on."""
    try:
        payload = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        made_kind, made_tag, made_scope, position = orjson.loads(payload)
    except (binascii.Error, ValueError, TypeError):
        raise StaleCursor("not a cursor of this list: send the next_cursor of the previous page as it was") from None
    if made_kind != kind:
        raise StaleCursor("not a cursor of this list: send the next_cursor of the previous page as it was")
    if made_tag != tag:
        raise StaleCursor(f"made for model version and snapshot {made_tag}, but {tag} answers now (the champion "
                          "or the snapshot changed): start again from the first page, without a cursor")
    if made_scope != scope:
        raise StaleCursor("made for other filters: send the filters of the first page with it, or start again "
                          "without a cursor")
    return position
