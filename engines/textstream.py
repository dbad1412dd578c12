"""Token ids in, text deltas out: incremental detokenizing and stop strings.

Pure Python (no torch): both the streamed and the non-streamed answers of the text
engine are built from the deltas these classes produce, so the two can never differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

REPLACEMENT = "\ufffd"

Decode = Callable[[Sequence[int]], str]


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas.

    Decoding ids one at a time goes wrong in two ways: a multi-byte UTF-8 character
    can span several byte-level tokens (decoding half of it gives U+FFFD), and
    SentencePiece-style decoders drop the leading space of the first token they see.
    So each step decodes a window that starts a little before the new tokens
    (`prefix_offset`), and only the text past the already-emitted part of that window
    (`read_offset`) is new. While the window's text ends in U+FFFD the character may
    still be incomplete and the delta is held back; `flush` emits what remains, real
    U+FFFD included.
    """

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_ids: Iterable[int]) -> str:
        """Adds tokens; returns the text they complete (maybe empty)."""
        self.ids.extend(token_ids)
        return self._step(final=False)

    def flush(self) -> str:
        """Emits everything not yet emitted, incomplete characters included."""
        return self._step(final=True)

    def _step(self, *, final: bool) -> str:
        if self._read_offset >= len(self.ids):
            return ""
        prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
        text = self._decode(self.ids[self._prefix_offset :])
        if len(text) <= len(prefix_text) and not final:
            return ""
        if text.endswith(REPLACEMENT) and not final:
            return ""
        delta = text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self.ids)
        return delta


class StopMatcher:
    """Cuts a stream of text deltas at the first stop string, leaking none of it.

    "First" is the stop occurrence that is complete first (earliest end; for equal
    ends, earliest start): that is where token-by-token generation notices it, and
    choosing it makes the result independent of how the text was split into deltas.
    Text that could still turn out to be the start of a stop string (the longest
    suffix of what was seen that is a prefix of some stop string) is held back until
    the next delta settles it; `flush` releases it when the stream ends without a stop.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def feed(self, delta: str) -> str:
        """Returns the part of `delta` (plus held text) that is safe to emit."""
        if self.stopped:
            return ""
        text = self._held + delta
        if not self.stops:
            self._held = ""
            return text
        # Held text holds no complete stop, so every hit here ends inside `text`.
        hits = [(i + len(s), i) for s in self.stops if (i := text.find(s)) >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)[1]]
        keep = self._partial_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Releases the held-back text at the end of a stream that did not stop."""
        text, self._held = self._held, ""
        return "" if self.stopped else text

    def _partial_suffix(self, text: str) -> int:
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest
