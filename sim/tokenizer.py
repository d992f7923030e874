"""A deterministic tokenizer: the same ids for the same text in every simulator process.

The vocabulary is built from a fixed recipe (no files, nothing seeded per process), in this order:

- special tokens ``<unk> <s> </s> <|system|> <|user|> <|assistant|> <|end|>`` (ids 0-6);
- 256 byte-fallback tokens ``<0x00>``..``<0xFF>``;
- whitespace pieces, digits and ASCII punctuation (each also with a leading space), single capitals
  and every lowercase string of 1-3 letters (each also with a leading space);
- the generator's words: two-syllable lowercase words with a leading space (`` baku``, `` melo``).

Encoding first cuts out special-token texts, then splits the rest into pre-tokens (an optional
leading space and a run of letters, one digit, a run of other symbols, or whitespace). A pre-token
in the vocabulary is one token; any other is covered greedily by the longest vocabulary pieces, and
a character no piece covers becomes its UTF-8 byte tokens. So ``decode(encode(text)) == text`` for
any text, and ``encode(decode(ids)) == ids`` for what the generator produces (words with a leading
space and single punctuation marks). No BOS token is added.
"""

from __future__ import annotations

import functools
import itertools
import re
import string
from collections.abc import Iterable, Sequence

UNK, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS: tuple[str, ...] = (
    "<unk>",
    "<s>",
    "</s>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
_BYTE_BASE = len(SPECIAL_TOKENS)
_CONSONANTS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
_LONGEST_PIECE = 5
_PRETOKEN = re.compile(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")
_SPECIAL = re.compile("|".join(re.escape(s) for s in SPECIAL_TOKENS))


def _text_pieces() -> Iterable[str]:
    yield from (" ", "\n", "\t", "\r", "\n\n")
    for char in string.digits + string.punctuation + string.ascii_uppercase:
        yield char
        yield " " + char
    for length in (1, 2, 3):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            piece = "".join(letters)
            yield piece
            yield " " + piece


def generator_words() -> tuple[str, ...]:
    """The words the generator speaks: consonant-vowel-consonant-vowel, with a leading space."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    return tuple(" " + a + b for a in syllables for b in syllables)


class Tokenizer:
    """Text ↔ token ids over the fixed vocabulary; build it once with :func:`default_tokenizer`."""

    def __init__(self) -> None:
        pieces = [*SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256)), *_text_pieces(), *generator_words()]
        self.pieces: tuple[str, ...] = tuple(pieces)
        self._ids: dict[str, int] = {}
        for index, piece in enumerate(pieces):
            self._ids.setdefault(piece, index)
        if len(self._ids) != len(pieces):
            raise AssertionError("the vocabulary recipe produced a duplicate piece")

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def token_id(self, piece: str) -> int:
        """The id of one vocabulary piece (KeyError when it is not one)."""
        return self._ids[piece]

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        position = 0
        for special in _SPECIAL.finditer(text):
            self._encode_plain(text[position : special.start()], ids)
            ids.append(self._ids[special.group()])
            position = special.end()
        self._encode_plain(text[position:], ids)
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        out = bytearray()
        for token in ids:
            if token < _BYTE_BASE:
                if not skip_special_tokens:
                    out += SPECIAL_TOKENS[token].encode()
            elif token < _BYTE_BASE + 256:
                out.append(token - _BYTE_BASE)
            else:
                out += self.pieces[token].encode()
        return out.decode("utf-8", errors="replace")

    def decode_token(self, token: int) -> str:
        """``decode([token])``; a vocabulary piece without the byte round trip (once per generated token)."""
        if token >= _BYTE_BASE + 256:
            return self.pieces[token]
        return self.decode([token])

    def piece(self, token: int) -> str:
        """The text of one token as it reads inside a longer text (special tokens by name)."""
        return self.pieces[token]

    def _encode_plain(self, text: str, ids: list[int]) -> None:
        for pretoken in _PRETOKEN.findall(text):
            whole = self._ids.get(pretoken)
            if whole is not None:
                ids.append(whole)
            else:
                self._encode_greedy(pretoken, ids)

    def _encode_greedy(self, text: str, ids: list[int]) -> None:
        start = 0
        while start < len(text):
            for length in range(min(_LONGEST_PIECE, len(text) - start), 0, -1):
                token = self._ids.get(text[start : start + length])
                if token is not None:
                    ids.append(token)
                    start += length
                    break
            else:
                ids.extend(_BYTE_BASE + byte for byte in text[start].encode())
                start += 1


@functools.cache
def default_tokenizer() -> Tokenizer:
    return Tokenizer()
