"""The one grammar of identifiers (tasks, apps, users, models, ...) and their names on disk.

The server accepts ids such as `team/gestures` or `gestures:v2`; a device stores models under those
ids, so each id maps to one safe directory name: never `..`, never a path separator, never the name
of another id.
"""

from __future__ import annotations

import hashlib
import re

MAX_ID_LENGTH = 128
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}")
ID_RULE = "1-128 letters, digits or ._:@+=/- starting with a letter or digit"

#: ids made of these characters (and without "..") are their own directory name, as they were
#: before ids could hold "/" or ":", so existing device stores keep working
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: characters kept as they are in an escaped name; every other one becomes %XX
_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
#: longer escaped names are cut and end in "%%" + a hash of the id, so that a directory name (and the
#: suffixes the device SDK adds to it) stays below the usual 255-byte limit of a file name
MAX_COMPONENT = 160
_HASH_MARK = "%%"


def is_id(value: object) -> bool:
    """True when `value` is a string of the id grammar."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(value: object, what: str) -> str:
    """Return `value` if it is an id, else raise ValueError naming `what`."""
    if not is_id(value):
        shown = value[:64] if isinstance(value, str) else value
        raise ValueError(f"{what} {shown!r} is not {ID_RULE}")
    return str(value)


def id_to_component(value: object, what: str = "id") -> str:
    """The directory name of an id: itself when plain, else escaped; ValueError when not an id.

    Different ids always get different names, and a name is never "." or "..", holds no "/" or "\\"
    and starts with a letter or digit.
    """
    ident = check_id(value, what)
    if _PLAIN.fullmatch(ident) and ".." not in ident:
        return ident
    # "." is escaped too: then no escaped name can contain ".." or equal a plain one (plain names
    # never hold "%", escaped ones always do)
    escaped = "".join(ch if ch in _KEPT else f"%{ord(ch):02X}" for ch in ident)
    if len(escaped) <= MAX_COMPONENT:
        return escaped
    head = escaped[: MAX_COMPONENT - 2 - 32]
    if "%" in head[-2:]:  # do not end on half an escape
        head = head[: head.rindex("%")]
    return head + _HASH_MARK + hashlib.sha256(ident.encode()).hexdigest()[:32]


def component_to_id(name: str) -> str | None:
    """The id whose directory name is `name`; None when `name` is a hashed (cut) one or no id's."""
    if _HASH_MARK in name:
        return None
    ident = re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), name)
    return ident if is_id(ident) and id_to_component(ident) == name else None
