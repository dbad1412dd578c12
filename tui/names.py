"""The API's rule for endpoint names (a DNS label), with a reason for each way to break it.

The same rule as the server's `NAME_PATTERN` (server/config.py); the TUI cannot import
it (the TUI talks to the server over HTTP only), so a test checks that both agree.
"""

from __future__ import annotations

import re

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_NAME_RE = re.compile(NAME_PATTERN)
_ALLOWED = set("abcdefghijklmnopqrstuvwxyz0123456789-")
MAX_LENGTH = 63


def name_problem(name: str) -> str | None:
    """None for a good endpoint name, else what is wrong with it, in a few words."""
    if not name:
        return "a name is required"
    bad = sorted({c for c in name if c not in _ALLOWED})
    if bad:
        if any(c.isupper() for c in bad) and all(c.lower() in _ALLOWED for c in bad):
            return "lowercase letters only"
        shown = ", ".join(repr(c) for c in bad[:5])
        return f"only a-z, 0-9 and '-' are allowed (not {shown})"
    if len(name) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters (this one has {len(name)})"
    if name[0] == "-" or name[-1] == "-":
        return "must start and end with a letter or a digit"
    if not _NAME_RE.fullmatch(name):  # nothing above missed, but the pattern is the rule
        return f"does not match {NAME_PATTERN}"
    return None
