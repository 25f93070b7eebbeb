"""Pure value model: the portable regular-expression dialect of ``pattern`` constraints.

A ``pattern`` must mean the same thing to every client that checks it, whatever its language,
so dspex accepts only the common core of RE2 (Go, C++), ECMAScript (JavaScript, Node.js) and
Python ``re``, and refuses the rest when the variable is registered:

* literals, ``.``, ``^`` and ``$``, alternation ``|``, groups ``( )`` and ``(?: )``;
* classes ``[...]`` / ``[^...]`` with ranges; ``\\d \\D \\w \\W \\s \\S`` (ASCII meaning),
  ``\\b \\B`` (outside classes), ``\\t \\n \\r \\f \\v``, ``\\xHH`` and an escaped syntax
  character (one of ``^$\\.*+?()[]{}|/-``);
* quantifiers ``* + ? {n} {n,} {n,m}`` (counts up to 1000), each optionally lazy (``?``).

Refused (they differ between those engines or some lack them): backreferences, lookaround,
named groups, inline flags, possessive quantifiers, ``\\p{..}``, ``\\A``/``\\Z``, unescaped
literal ``]``, ``{`` or ``}``, nested ``[`` and an empty class. A value matches when the whole
value matches (full match), with ASCII ``\\d \\w \\s \\b``.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from dspex import errors

__all__ = ["DIALECT_HINT", "check_pattern", "compiled"]

DIALECT_HINT: Final = (
    "patterns use the portable dialect shared by RE2, ECMAScript and Python re "
    "(see docs/protocol.md, 'Patterns')"
)
_SYNTAX: Final = frozenset("^$\\.*+?()[]{}|/-")
_SHORTHAND: Final = frozenset("dDwWsS")
_CONTROL: Final = frozenset("tnrfv")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_REPEAT: Final = re.compile(r"\{(\d{1,4})(,(\d{0,4}))?\}")
_MAX_REPEAT: Final = 1000
_WHY: Final = {
    "p": "Unicode property classes (\\p{..}) are not portable; use explicit character ranges",
    "P": "Unicode property classes (\\P{..}) are not portable; use explicit character ranges",
    "A": "\\A is not portable; use ^ (patterns match the whole value anyway)",
    "Z": "\\Z is not portable; use $ (patterns match the whole value anyway)",
    "z": "\\z is not portable; use $ (patterns match the whole value anyway)",
    "k": "named backreferences are not portable",
    "u": "\\u escapes are not portable; use \\xHH or the character itself",
}


class _NotPortableError(Exception):
    """Internal: the pattern leaves the dialect at ``position`` for ``reason``."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason


def check_pattern(pattern: object, type_name: str = "string") -> str:
    """Return ``pattern`` if it is a string in the portable dialect that compiles.

    Raises:
        PatternError: not a string, outside the dialect (the message names the position and
            the construct), or not a valid regular expression.
    """
    if not isinstance(pattern, str):
        raise errors.PatternError(f"pattern={pattern!r} must be a string", type=type_name)
    try:
        _scan(pattern)
    except _NotPortableError as refused:
        raise errors.PatternError(
            f"pattern={pattern!r} is not portable at position {refused.position}: "
            f"{refused.reason}; {DIALECT_HINT}",
            type=type_name,
            pattern=pattern,
            position=refused.position,
        ) from None
    try:
        compiled(pattern)
    except re.error as exc:
        raise errors.PatternError(
            f"pattern={pattern!r} is not a valid regular expression: {exc}",
            type=type_name,
            pattern=pattern,
        ) from exc
    return pattern


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> re.Pattern[str]:
    """The compiled pattern with the dialect's ASCII meaning of ``\\d \\w \\s \\b``."""
    return re.compile(pattern, re.ASCII)


def _scan(pattern: str) -> None:
    """Walk the pattern once; raise :class:`_NotPortableError` at the first foreign construct."""
    i, n = 0, len(pattern)
    quantifiable = False  # whether the previous item may take a quantifier
    while i < n:
        char = pattern[i]
        if char == "\\":
            end = _escape(pattern, i, in_class=False)
            i, quantifiable = end, pattern[i + 1] not in "bB"  # \b, \B are assertions
            continue
        if char == "[":
            i, quantifiable = _char_class(pattern, i), True
            continue
        if char in "*+?{":
            i, quantifiable = _quantifier(pattern, i, quantifiable), False
            continue
        if char == "(":
            if pattern.startswith("(?", i) and not pattern.startswith("(?:", i):
                raise _NotPortableError(i, "only (?:...) groups are portable (no named groups, "
                                  "lookaround or inline flags)")  # fmt: skip
            i, quantifiable = i + (3 if pattern.startswith("(?:", i) else 1), False
            continue
        if char in "]}":
            raise _NotPortableError(i, f"a literal {char!r} must be escaped as '\\{char}'")
        quantifiable = char not in "^$|("
        i += 1


def _escape(pattern: str, i: int, *, in_class: bool) -> int:
    """Check the escape at ``pattern[i]`` (a backslash); return the index after it."""
    if i + 1 >= len(pattern):
        raise _NotPortableError(i, "the pattern ends with a lone backslash")
    char = pattern[i + 1]
    if char in _SHORTHAND or char in _CONTROL or char in _SYNTAX:
        return i + 2
    if char in "bB" and not in_class:
        return i + 2
    if char == "x":
        if len(pattern) >= i + 4 and set(pattern[i + 2 : i + 4]) <= _HEX:
            return i + 4
        raise _NotPortableError(i, "\\x needs exactly two hex digits (\\xHH)")
    if char.isdigit():
        raise _NotPortableError(i, "backreferences and octal escapes are not portable")
    if in_class and char in "bB":
        raise _NotPortableError(i, f"\\{char} inside a class is not portable")
    reason = _WHY.get(char, f"the escape '\\{char}' is not portable")
    raise _NotPortableError(i, reason)


def _char_class(pattern: str, i: int) -> int:
    """Check the class starting at ``pattern[i]`` (``[``); return the index after its ``]``."""
    start, n = i, len(pattern)
    i += 2 if pattern.startswith("[^", i) else 1
    if i < n and pattern[i] == "]":
        raise _NotPortableError(
            i, "an empty class or a leading ']' is not portable; escape it as '\\]'"
        )
    while i < n:
        char = pattern[i]
        if char == "]":
            return i + 1
        if char == "\\":
            i = _escape(pattern, i, in_class=True)
            continue
        if char == "[":
            raise _NotPortableError(i, "a '[' inside a class must be escaped as '\\['")
        if pattern.startswith(("&&", "~~", "||", "--"), i):
            raise _NotPortableError(i, f"{pattern[i : i + 2]!r} inside a class is not portable")
        i += 1
    raise _NotPortableError(start, "the class is not closed with ']'")


def _quantifier(pattern: str, i: int, quantifiable: bool) -> int:
    """Check the quantifier at ``pattern[i]``; return the index after it (and a lazy ``?``)."""
    if pattern[i] == "{":
        match = _REPEAT.match(pattern, i)
        if match is None:
            raise _NotPortableError(
                i, "a '{' must start {n}, {n,} or {n,m}; escape a literal as '\\{'"
            )
        counts = [int(c) for c in (match.group(1), match.group(3)) if c]
        if max(counts) > _MAX_REPEAT:
            raise _NotPortableError(i, f"repeat counts above {_MAX_REPEAT} are not portable")
        end = match.end()
    else:
        end = i + 1
    if not quantifiable:
        raise _NotPortableError(i, "a quantifier must follow a character, class or group")
    if end < len(pattern) and pattern[end] == "?":
        end += 1
    if end < len(pattern) and pattern[end] in "*+?{":
        raise _NotPortableError(end, "possessive or repeated quantifiers are not portable")
    return end
