"""When a generation stops, and which text it has shown so far: vLLM's stop rules, per request.

- EOS stops with ``finish_reason="stop"`` unless ``ignore_eos``; EOS has no text.
- A token in ``stop_token_ids`` stops with ``stop_reason`` = that id (its text is not shown).
- A ``stop`` string stops with ``stop_reason`` = that string; the text is cut before it (after it
  with ``include_stop_str_in_output``). Until the request finishes, the last ``len(longest stop) - 1``
  characters are held back so a stream never shows the start of a stop string it later cuts.
- Stop tokens and strings count only once ``min_tokens`` tokens exist; ``max_tokens`` stops with
  ``finish_reason="length"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tandem.sim.tokenizer import EOS, Tokenizer

# "error": the engine failed the request (vLLM's FinishReason.ERROR, e.g. a failed KV load).
FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(frozen=True)
class StopRules:
    max_tokens: int
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False


@dataclass(frozen=True)
class Step:
    """What one new token changed: text newly safe to show, and the finish if it finished."""

    text: str
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None


class OutputText:
    """The generated text of one request, fed one token at a time."""

    def __init__(self, rules: StopRules, tokenizer: Tokenizer) -> None:
        self._rules = rules
        self._tokenizer = tokenizer
        self._text = ""
        self._shown = 0
        self._holdback = 0 if rules.include_stop_str_in_output else max(map(len, rules.stop), default=1) - 1
        self.num_tokens = 0

    @property
    def text(self) -> str:
        return self._text

    def append(self, token: int) -> Step:
        self.num_tokens += 1
        rules = self._rules
        stops_count = self.num_tokens > rules.min_tokens
        if token == EOS and not rules.ignore_eos and stops_count:
            return self._finish("stop", None)
        if token in rules.stop_token_ids and stops_count:
            return self._finish("stop", token)
        before = len(self._text)
        self._text += self._tokenizer.decode_token(token)
        if rules.stop and stops_count:
            hit = self._find_stop(before)
            if hit is not None:
                index, stop = hit
                self._text = self._text[: index + len(stop) if rules.include_stop_str_in_output else index]
                return self._finish("stop", stop)
        if self.num_tokens >= rules.max_tokens:
            return self._finish("length", None)
        safe = max(self._shown, len(self._text) - self._holdback)
        return Step(self._take(safe))

    def _find_stop(self, before: int) -> tuple[int, str] | None:
        """The earliest stop string that ends in the newly added text."""
        found: tuple[int, str] | None = None
        for stop in self._rules.stop:
            index = self._text.find(stop, max(0, before - len(stop) + 1))
            if index >= 0 and (found is None or index < found[0]):
                found = (index, stop)
        return found

    def _take(self, upto: int) -> str:
        shown, self._shown = self._shown, upto
        return self._text[shown:upto]

    def _finish(self, reason: FinishReason, stop_reason: str | int | None) -> Step:
        return Step(self._take(len(self._text)), reason, stop_reason)
