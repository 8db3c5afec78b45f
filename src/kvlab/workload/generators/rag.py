"""``rag``: retrieved documents re-used across queries.

A corpus of ``documents`` documents (lengths drawn once around
``document_tokens``) with Zipf popularity (weight ``1 / (rank + 1) **
zipf_s``). Each of ``sessions`` queries retrieves ``top_k`` distinct documents
by popularity; its prompt is the shared system prompt, the documents in
retrieval order (or sorted by id with ``sort_documents``), then the query.

KV effect: documents are re-used often, but a prefix cache only hits a
document when everything before it matches too: the first retrieved
document is re-used far more than later ones. ``sort_documents`` (a
canonical order) raises the reuse bound; ``kvlab workload stats`` shows both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvlab.errors import ConfigError
from kvlab.workload.generators._common import CommonParams, in_run_order, nonzero, seg
from kvlab.workload.records import Request


@dataclass(frozen=True)
class RagParams(CommonParams):
    sessions: int = 200
    rate_per_s: float = 2.0
    system_tokens: int = 400
    documents: int = 40
    document_tokens: int = 1500
    top_k: int = 3
    zipf_s: float = 1.1
    query_tokens: int = 60
    output_tokens: int = 200
    sort_documents: bool = False

    POSITIVE = ("sessions", "documents", "output_tokens")

    def check(self) -> None:
        """:meth:`CommonParams.check`, and ``top_k <= documents``."""
        super().check()
        if self.top_k > self.documents:
            raise ConfigError(
                f"parameter top_k ({self.top_k}) must be <= documents ({self.documents})"
            )


def build(p: RagParams, rng: np.random.Generator) -> tuple[Request, ...]:
    system = seg("system", p.system_tokens, "rag/system", "system")
    doc_lens = p.lengths(rng, p.document_tokens, p.documents)
    weights = 1.0 / np.arange(1, p.documents + 1) ** p.zipf_s
    weights /= weights.sum()
    k = min(p.top_k, p.documents)
    starts = p.starts(rng)
    queries = p.lengths(rng, p.query_tokens, p.sessions)
    outs = p.lengths(rng, p.output_tokens, p.sessions)
    reqs = []
    for i in range(p.sessions):
        picked = [int(d) for d in rng.choice(p.documents, size=k, replace=False, p=weights)]
        if p.sort_documents:
            picked.sort()
        docs = [seg("document", doc_lens[d], f"rag/doc{d}") for d in picked]
        reqs.append(
            Request(
                request_id=f"q{i}",
                segments=nonzero(
                    (system, *docs, seg("user", queries[i], f"rag/q{i}/query", "ephemeral"))
                ),
                output_tokens=outs[i],
                arrival_s=float(starts[i]),
                cls="rag",
            )
        )
    return in_run_order(reqs)
