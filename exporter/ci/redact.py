"""Our secrets out of whatever CI, or a proxy in front of it, sends back.

Thread ownership: a Redactor is immutable once built (the client keeps the one for its current
keys); the module holds no mutable state.

Every piece of text from an answer that can reach an error message, a label or a log passes a
Redactor before it is cut to length, so that a long echo cannot leave the tail of a secret
behind. Looked for: the secret key, the session token and the secret id, whole and in pieces
(any FRAGMENT characters of one of them: an echo cut short by a proxy is still caught), and
the signature and key id of any echoed Authorization header or signed URL, whatever keys made
them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FRAGMENT = 16  # the shortest piece of a secret looked for (shorter secrets: whole only)
REDACTED = "<redacted>"
# What CI's error Codes look like (`InvalidParameter.JobIdInvalid`, `SlowDown`): a Code that does
# not is not CI's, and shows as "other" wherever it would be a label. Not ending in a dot, so
# that a Code cut short (`...`) is not one either.
CODE_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9._]{0,62}[A-Za-z0-9_])?")
_SIGNED_RE = re.compile(r"(q-(?:signature|ak)\s*[=:]\s*)[^&\s\"'<>;,]*", re.IGNORECASE)
_MIN_WHOLE = 4  # a secret shorter than this is not worth looking for (it would hit anything)


def is_code(text: str) -> bool:
    """Whether `text` has the shape of one of CI's error Codes."""
    return CODE_RE.fullmatch(text) is not None


class Redactor:
    """`redactor(text)`: text with every secret, piece of one, or signature as REDACTED."""

    __slots__ = ("_pieces", "_whole")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        pieces: set[str] = set()
        whole: list[str] = []
        for secret in secrets:
            if not secret or len(secret) < _MIN_WHOLE:
                continue
            if len(secret) < FRAGMENT:
                whole.append(secret)
            else:
                pieces.update(secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1))
        self._pieces = frozenset(pieces)
        self._whole = tuple(sorted(whole, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"Redactor({len(self._whole) + len(self._pieces)} patterns)"  # never the secrets

    def __call__(self, text: str) -> str:
        if "q-" in text.lower():
            text = _SIGNED_RE.sub(lambda m: m.group(1) + REDACTED, text)
        for secret in self._whole:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if len(text) < FRAGMENT or not self._pieces:
            return text
        return self._without_pieces(text)

    def _without_pieces(self, text: str) -> str:
        pieces = self._pieces
        spans: list[tuple[int, int]] = []
        start = end = -1
        for i in range(len(text) - FRAGMENT + 1):
            if text[i : i + FRAGMENT] in pieces:
                if i > end:
                    if end >= 0:
                        spans.append((start, end))
                    start = i
                end = i + FRAGMENT
        if end < 0:
            return text
        spans.append((start, end))
        out: list[str] = []
        last = 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(REDACTED)
            last = end
        out.append(text[last:])
        return "".join(out)


NO_SECRETS = Redactor(())
