"""Token ids → text, incrementally, with stop strings: what a streaming client may see so far.

Decoding one token at a time is wrong for byte-level BPE (a character may span tokens) and for
SentencePiece (a leading space depends on the previous token). :class:`TextStream` decodes a small
window of recent tokens and appends only the settled difference (the method TGI and vLLM use).

Stop strings may straddle tokens, so text that could still be the start of a stop string is held
back until it is known not to be one; at the end everything left is released.
"""

from __future__ import annotations


class TextStream:
    """The text of one request's generated tokens, cut at the first stop string."""

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False  # a stop string was found; nothing more is appended
        self._prefix = 0  # window start: decoded alone, to learn what the window's tail adds
        self._read = 0  # ids up to here are already part of self.text
        self._emitted = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> None:
        """Add one generated token."""
        if self.stopped:
            return
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        # "\ufffd" at the end: an incomplete UTF-8 sequence; wait for the next token.
        if len(after) > len(before) and not after.endswith("\ufffd"):
            old = len(self.text)
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
            self._find_stop(old)

    def _find_stop(self, old: int) -> None:
        if not self.stop:
            return
        longest = max(len(s) for s in self.stop)
        start = max(0, old - longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            self.stopped = True

    def _held(self) -> int:
        # The longest tail of the text that is a proper prefix of some stop string.
        if self.stopped or not self.stop:
            return 0
        tail = min(len(self.text), max(len(s) for s in self.stop) - 1)
        for k in range(tail, 0, -1):
            if any(s.startswith(self.text[-k:]) for s in self.stop):
                return k
        return 0

    def take(self, final: bool = False) -> str:
        """Text not handed out yet that is safe to show (everything when ``final``)."""
        end = len(self.text) if final else max(self._emitted, len(self.text) - self._held())
        delta = self.text[self._emitted:end]
        self._emitted = end
        return delta

    def finish(self) -> str:
        """Flush tokens still waiting for more bytes and return the rest of the text."""
        if not self.stopped and self._read < len(self.ids):
            old = len(self.text)
            before = self._decode(self.ids[self._prefix:self._read])
            self.text += self._decode(self.ids[self._prefix:])[len(before):]
            self._read = len(self.ids)
            self._find_stop(old)
        return self.take(final=True)
