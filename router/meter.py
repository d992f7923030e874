"""One request's workload figures as its answer passes through the router, recorded into its
route's signals (``signals.py``) when the answer ends. Pure: the caller gives the times.

A stream's first token is its first chunk that carries generated text (not a chat role chunk with
empty content, not the usage chunk, not ``[DONE]``); its inter-token latencies are the gaps between
such chunks, as ``vllm bench serve`` and ``tandem load`` measure them; its output tokens are the
engine's usage when the stream carries it (``stream_options.include_usage``), else its text events
(vLLM writes one per engine step). A whole answer's tokens are its ``usage``, which vLLM always
sends. Only streams are judged against the SLO: a whole answer has no first token to time.
"""

from __future__ import annotations

import msgspec

from tandem.api import SloSpec, SloVerdict, slo_verdict
from tandem.router.signals import RouteSignals
from tandem.router.sse import DONE

_USAGE = b'"usage":{'


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Answer(msgspec.Struct):
    usage: _Usage | None = None


_decode_usage = msgspec.json.Decoder(_Usage).decode
_decode_answer = msgspec.json.Decoder(_Answer).decode


def text_events(chunk: bytes) -> int:
    """How many events of an SSE chunk (vLLM's compact JSON) carry generated text."""
    # The events that carry none: [DONE], the usage chunk, a chat role chunk, an empty text.
    count = chunk.count
    events = count(b"data:") - count(b"[DONE]") - count(b'"choices":[]') - count(b'"content":""')
    return max(events - count(b'"text":""'), 0)


def usage_of(data: bytes) -> _Usage | None:
    """The usage of an answer, or of the last event of a stream's tail that reports one. vLLM
    writes it last: the object alone is decoded, not the whole answer, unless it nests one
    (``prompt_tokens_details``)."""
    at = data.rfind(_USAGE)
    if at < 0:
        return None
    start = at + len(_USAGE) - 1
    end = data.find(b"}", start)
    try:
        return _decode_usage(data[start : end + 1])
    except msgspec.DecodeError:
        pass
    event_start = data.rfind(b"\n\n", 0, at) + 1
    event = data[event_start:].split(b"\n\n", 1)[0].strip().removeprefix(b"data:").strip()
    try:
        return _decode_answer(event).usage
    except msgspec.DecodeError:
        return None


class RequestMeter:
    __slots__ = (
        "_itl", "_signals", "_slo", "first", "last", "output_tokens", "prompt_tokens", "started", "texts"
    )  # fmt: skip

    def __init__(self, signals: RouteSignals, slo: SloSpec, started: float, prompt_tokens: int) -> None:
        self._signals, self._slo, self.started = signals, slo, started
        self._itl = signals.itl  # observed on every token chunk
        self.prompt_tokens = prompt_tokens  # the router's count (or estimate), until usage says
        self.first: float | None = None  # when the first text came
        self.last = 0.0
        self.texts = 0
        self.output_tokens: int | None = None  # once an answer ended well

    def chunk(self, data: bytes, now: float) -> None:
        if self.first is not None:
            # vLLM's token chunks end with their choices: no marker to look for; its [DONE] comes alone
            if data.endswith(b"]}\n\n"):
                texts = data.count(b"data:")
            else:
                texts = 0 if data == DONE else text_events(data)
            if texts:
                self._itl.observe(now - self.last)
                self.last = now
                self.texts += texts
        elif texts := text_events(data):
            self.first = self.last = now
            self.texts = texts

    def streamed(self, outcome: str, tail: bytes, now: float) -> None:
        """The stream ended: ``outcome`` ok, error or cancelled (the client left); ``tail`` its last
        bytes. A client that left before any token and before the TTFT target is not judged: it
        did not wait for the answer."""
        usage = usage_of(tail)
        output = usage.completion_tokens if usage is not None else self.texts
        self._record(usage, output, ok=outcome == "ok")
        first = self.first
        ttft: float | None
        tpot: float | None
        if first is None:
            if outcome == "cancelled" and (now - self.started) * 1000 < self._slo.ttft_ms:
                return
            ttft = tpot = None
        else:
            ttft = first - self.started
            self._signals.ttft.observe(ttft)
            tpot = (self.last - first) / (output - 1) if output > 1 else None
        self._signals.slo[slo_verdict(outcome != "error", ttft, tpot, self._slo)] += 1

    def answered(self, ok: bool, body: bytes) -> None:
        """A whole answer came back (``ok``: a 2xx)."""
        usage = usage_of(body) if ok else None
        self._record(usage, usage.completion_tokens if usage is not None else 0, ok=ok)

    def _record(self, usage: _Usage | None, output: int, *, ok: bool) -> None:
        signals = self._signals
        prompt = usage.prompt_tokens if usage is not None and usage.prompt_tokens else self.prompt_tokens
        self.prompt_tokens = prompt
        signals.prompt.observe(prompt)
        signals.tokens[0] += prompt
        if ok:
            self.output_tokens = output
            signals.output.observe(output)
            signals.tokens[1] += output


def failed(signals: RouteSignals, streamed: bool) -> None:
    """A request that got no answer at all (refused, no endpoint, every attempt failed)."""
    if streamed:
        signals.slo[SloVerdict.FAILED] += 1
