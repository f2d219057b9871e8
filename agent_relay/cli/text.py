"""Text from the ledger made safe to print on a terminal.

Run names, tool names, arguments and error messages are whatever an agent (or a model) put there. Printed
raw, an escape sequence in them could clear the screen, retitle the window or plant a hyperlink, and a
newline could forge a line of ``agent-relay runs``. ``printable`` shows every control character instead.
"""

from __future__ import annotations

import re

# C0 (newline and tab included), DEL and C1: none of them is printed as it is.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def printable(value: object) -> str:
    """``str(value)`` with each C0 or C1 control character (and DEL) written as a visible escape:
    ``\\n``, ``\\r``, ``\\t``, else ``\\xNN``. The result is one line and moves no cursor."""
    return _CONTROL.sub(_visible, str(value))


def json_safe(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with DEL and the C1 controls, which json.dumps
    leaves raw, written as ``\\u00NN`` escapes: still the same JSON value, and inert on a terminal.

    Valid because outside strings JSON text holds no such character: every match is inside a string.
    """
    return re.sub("[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)
