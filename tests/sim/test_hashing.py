"""Segment-chain block keys: equal prefixes give equal keys, nothing else does."""

from __future__ import annotations

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
