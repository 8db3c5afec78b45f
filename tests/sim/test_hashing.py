"""Segment-chain block keys: equal prefixes give equal keys, nothing else does."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kvlab.sim.hashing import ChainInterner


def tokens(segs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The token stream of segments: token j of content c is (c, j)."""
    return [(c, j) for c, n in segs for j in range(n)]


def test_shared_prefix_and_boundary_cases() -> None:
    it = ChainInterner()
    a, _ = it.prompt_keys([(0, 8), (1, 8)], 4)
    b, _ = it.prompt_keys([(0, 8), (2, 8)], 4)
    c, _ = it.prompt_keys([(0, 12)], 4)
    assert a[:2] == b[:2] and a[2:] != b[2:]
    assert c[:2] == a[:2]  # [c0 8 tokens] is a prefix of [c0 12 tokens]
    assert c[2] != a[2]
    assert len(a) == 4 and len(it.prompt_keys([(0, 7)], 4)[0]) == 1


segments = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9)), min_size=1, max_size=5)


@given(segments, segments, st.integers(1, 6))
def test_keys_equal_iff_token_prefixes_equal(x: list, y: list, bs: int) -> None:
    it = ChainInterner()
    kx, _ = it.prompt_keys(x, bs)
    ky, _ = it.prompt_keys(y, bs)
    tx, ty = tokens(x), tokens(y)
    assert len(kx) == len(tx) // bs
    for i in range(min(len(kx), len(ky))):
        end = (i + 1) * bs
        assert (kx[i] == ky[i]) == (tx[:end] == ty[:end])


def test_walk_names_prefixes_like_prompt_keys() -> None:
    from types import SimpleNamespace

    def seg(content: str, n: int) -> SimpleNamespace:
        return SimpleNamespace(content_id=content, tokens=n)

    prompts = [
        [seg("a", 8), seg("b", 8)],
        [seg("a", 8), seg("c", 8)],
        [seg("a", 12)],
        [seg("a", 8), seg("b", 5)],
        [seg("a", 7), seg("b", 9)],
    ]
    it = ChainInterner()
    walked = []
    for p in prompts:
        ends: list[int] = []
        firsts, _ = it.walk(p, 4, ends, [])
        keys, start = [], 0
        for k0, end in zip(firsts, ends, strict=True):
            keys += [k0 + 4 * j for j in range(end - start)]
            start = end
        walked.append(keys)
    ref = ChainInterner()
    ids = {"a": 0, "b": 1, "c": 2}
    listed = [ref.prompt_keys([(ids[s.content_id], s.tokens) for s in p], 4)[0] for p in prompts]
    assert [len(k) for k in walked] == [len(k) for k in listed] == [4, 4, 3, 3, 4]
    # the same key in two prompts exactly where prompt_keys shares it
    for i, wi in enumerate(walked):
        for j, wj in enumerate(walked):
            for x in range(len(wi)):
                for y in range(len(wj)):
                    assert (wi[x] == wj[y]) == (listed[i][x] == listed[j][y])


def _seg(content: str, n: int) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(content_id=content, tokens=n)


requests_st = st.lists(
    st.tuples(
        st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 9)), min_size=1, max_size=5),
        st.sampled_from(["a", "b", "o", "p", None]),  # named output content, or fresh
        st.integers(0, 12),  # output tokens
        st.booleans(),  # whether its output keys are asked for right after its walk
    ),
    min_size=1,
    max_size=8,
)


@given(requests_st, st.integers(1, 6))
def test_merged_runs_keep_keys_equal_iff_token_prefixes_equal(reqs: list, bs: int) -> None:
    """With :meth:`reserve`, parts continue each other's runs; keys (prompt and named
    output blocks, asked for in any order) still name token prefixes exactly."""
    lengths: dict[str, int] = {}
    for segs, out, n_out, _ in reqs:
        for c, n in segs:
            lengths[c] = max(lengths.get(c, 0), n)
        if out is not None:
            lengths[out] = max(lengths.get(out, 0), n_out)
    it = ChainInterner()
    it.reserve(lengths)
    walked: list[list[int]] = []
    streams: list[list[tuple[str, int]]] = []
    late: list[tuple[int, int, str, int, int]] = []
    for r, (segs, out, n_out, eager) in enumerate(reqs):
        ends: list[int] = []
        firsts, node = it.walk([_seg(c, n) for c, n in segs], bs, ends, [])
        keys, start = [], 0
        for k0, end in zip(firsts, ends, strict=True):
            keys += [k0 + bs * j for j in range(end - start)]
            start = end
        plen = sum(n for _, n in segs)
        stream = [(c, j) for c, n in segs for j in range(n)]
        assert len(keys) == plen // bs
        walked.append(keys)
        if out is None:
            streams.append(stream)
            continue
        stream += [(out, j) for j in range(n_out)]
        streams.append(stream)
        if eager:
            keys += _output_keys(it, node, out, plen, n_out, bs)
        else:
            late.append((r, node, out, plen, n_out))
    for r, node, out, plen, n_out in late:
        walked[r] += _output_keys(it, node, out, plen, n_out, bs)
    for i, wi in enumerate(walked):
        for j, wj in enumerate(walked):
            for x in range(len(wi)):
                for y in range(len(wj)):
                    same = x == y and streams[i][: (x + 1) * bs] == streams[j][: (x + 1) * bs]
                    assert (wi[x] == wj[y]) == same


def _output_keys(it: ChainInterner, node: int, out: str, plen: int, n: int, bs: int) -> list[int]:
    """Keys of the full blocks that end inside the output (as Seq.key_at names them)."""
    base = it.part(node, out) - plen
    return [base + e for e in range((plen // bs + 1) * bs, plen + n + 1, bs)]
