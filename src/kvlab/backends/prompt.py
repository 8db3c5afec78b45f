"""Prompt text for a workload request sent to a live server.

The text of a segment is the deterministic content of its ``content_id``
(:mod:`kvlab.workload.content`), so two requests that share leading segments
share a textual prefix and a server's prefix cache can hit it. When that
module is not available a local stand-in is used: words drawn from a
per-content-id stream, about one token each for common BPE vocabularies.

A cache *salt* (a short string) is put in front of every prompt of a run in
``cold`` cache mode on servers without a reset endpoint: it makes every block
hash new while keeping the requests' shared prefixes shared with each other.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Callable
from typing import cast

from kvlab.workload.records import Request

_WORD_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there one all we their can has been more if "
    "will would other when what so no out up into time them some could these two may then do "
    "first any my now such like our over man me even most made after also did many before "
    "must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old "
    "year off come since against go came right used take three "
)
_WORDS = tuple(_WORD_TEXT.split())


@functools.lru_cache(maxsize=4096)
def _fallback_text(content_id: str, num_tokens: int) -> str:
    """``num_tokens`` words of a deterministic stream seeded by ``content_id``."""
    words: list[str] = []
    counter = 0
    while len(words) < num_tokens:
        h = hashlib.blake2b(f"{content_id}:{counter}".encode(), digest_size=32).digest()
        words.extend(_WORDS[b % len(_WORDS)] for b in h)
        counter += 1
    return " " + " ".join(words[:num_tokens]) if num_tokens else ""


def _resolve() -> Callable[[Request], str]:
    try:
        content = importlib.import_module("kvlab.workload.content")
    except ImportError:
        content = None
    fn = getattr(content, "prompt_text", None)
    if callable(fn):
        return cast(Callable[[Request], str], fn)
    return lambda req: "".join(_fallback_text(s.content_id, s.tokens) for s in req.segments)


def prompt_builder(salt: str | None = None) -> Callable[[Request], str]:
    """A function from request to prompt text, with ``salt`` in front when given."""
    base = _resolve()
    if not salt:
        return base
    prefix = f"[{salt}]"
    return lambda req: prefix + base(req)


__all__ = ["prompt_builder"]
