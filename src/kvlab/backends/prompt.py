"""Prompt text for a workload request sent to a live server.

The text of a segment is the deterministic content of its ``content_id``
(:func:`kvlab.workload.content.text`), so two requests that share leading
segments share a textual (and, with word-aligned tokenizers, token) prefix and
a server's prefix cache can hit it. Segment texts are cached (LRU), so a
system prompt shared by many requests is built once.

A cache *salt* (a short string) is put in front of every prompt of a run in
``cold`` cache mode on servers without a reset endpoint: it makes every block
hash new while keeping the requests' shared prefixes shared with each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from kvlab.workload.content import text
from kvlab.workload.records import Request

#: Distinct (content id, length) segment texts kept in memory.
SEGMENT_CACHE_SIZE = 4096


def prompt_builder(salt: str | None = None) -> Callable[[Request], str]:
    """A function from request to prompt text, with ``salt`` in front when given."""
    seg_text = segment_text()
    prefix = salt_prefix(salt)

    def build(req: Request) -> str:
        return prefix + "".join(seg_text(s.content_id, s.tokens) for s in req.segments)

    return build


def segment_text() -> Callable[[str, int], str]:
    """:func:`kvlab.workload.content.text` with an LRU cache of :data:`SEGMENT_CACHE_SIZE`."""
    return functools.lru_cache(maxsize=SEGMENT_CACHE_SIZE)(text)


def salt_prefix(salt: str | None) -> str:
    """The text put in front of every prompt of a salted run (empty without a salt)."""
    return f"[{salt}]" if salt else ""


__all__ = ["prompt_builder", "salt_prefix", "segment_text"]
