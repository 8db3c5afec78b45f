"""cache-curve: prefix-cache hit rate against capacity (LRU, infinitely fast compute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.errors import ConfigError
from kvlab.sim.block_keys import BlockKeyTable, block_keys, block_pieces
from kvlab.sim.cache_curve import PrefixTrie, cache_curve, reference_cache_curve, replay_order
from kvlab.workload.detect import load_workload
from kvlab.workload.importers import read_mooncake
from kvlab.workload.records import Request, Segment


def req(rid: str, *segs: tuple[str, int], t: float = 0.0) -> Request:
    return Request(rid, tuple(Segment("x", n, c) for c, n in segs), 1, arrival_s=t)


def hits(reqs: list[Request], block_size: int, caps: list[int]) -> list[int]:
    curve = cache_curve(reqs, block_size, caps)
    assert curve == reference_cache_curve(reqs, block_size, caps)
    return [p.hit_blocks for p in curve.points]


# --------------------------------------------------------------------------- block keys


def test_block_pieces_and_keys_share_only_equal_prefixes() -> None:
    a = [Segment("x", 6, "s"), Segment("x", 5, "u")]
    assert block_pieces(a, 4) == [
        (("s", 0, 4),),
        (("s", 4, 6), ("u", 0, 2)),
    ]
    t = BlockKeyTable()
    assert block_keys(a, 4, t) == [0, 1]
    # same first segment, different second: first block shared, second not
    assert block_keys([Segment("x", 6, "s"), Segment("x", 5, "v")], 4, t) == [0, 2]
    # a shorter segment of the same content is a prefix of it
    assert block_keys([Segment("x", 4, "s")], 4, t) == [0]
    # equal pieces under a different parent are a different block
    assert block_keys([Segment("x", 4, "v"), Segment("x", 8, "s")], 4, t) == [3, 4, 5]
    assert len(t) == 6


# --------------------------------------------------------------------------- narrative


def test_prefix_trie_nodes_splits_and_units() -> None:
    a = req("a", ("s", 8), ("a", 4))
    b = req("b", ("s", 8), ("b", 5))  # parts from a after s: node 1 gets a second child
    c = req("c", ("s", 4))  # ends inside the edge s[0:8]: split at depth 4 (node 4)
    d = req("d", ("s", 8), ("a", 4), ("x", 2))  # a's prompt and two more tokens
    trie = PrefixTrie([a, b, c, d])
    assert trie.depth == [0, 8, 12, 13, 4, 14]
    assert trie.parent == [0, 4, 1, 1, 0, 2]
    assert trie.ends == [2, 3, 4, 5]
    assert trie.num_children == [1, 2, 1, 0, 1, 0]
    # B = 4: units end at the prompt ends (2, 3, 4, 5) and the branch (1); node 5
    # holds no full block (depths 13..14 are inside block 3, already ended at node 2)
    up, blocks = trie.units(4)
    assert up == [0, 4, 1, 1, 0, 2]
    assert blocks == [0, 1, 1, 1, 1, 0]
    # hits: b finds s0 s1 at depths 1, 2; c hits nothing (3 tokens hittable: no
    # block); d finds s0 s1 a0 at depths 1, 2, 4 (b0 is above a0 in the stack)
    assert hits([a, b, c, d], 4, [0, 1, 2, 3, 4]) == [0, 1 + 1, 2 + 2, 2 + 2, 2 + 3]


def test_shared_system_prompt_hits_by_capacity() -> None:
    # B = 4. A: s0 s1 a0 (3 cacheable, 2 hittable); B: s0 s1 b0 (+1 token), 3 hittable.
    a = req("a", ("s", 8), ("a", 4), t=0)
    b = req("b", ("s", 8), ("b", 5), t=1)
    curve = cache_curve([a, b], 4, [0, 1, 2, 3])
    assert [p.hit_blocks for p in curve.points] == [0, 1, 2, 2]
    assert curve.num_hittable_blocks == 2 + 3
    assert curve.num_prompt_tokens == 25
    two = curve.points[2]
    assert (two.block_hit_rate, two.token_hit_rate, two.hit_tokens) == (2 / 5, 8 / 25, 8)
    assert curve.infinite.hit_blocks == 2
    assert curve.infinite.capacity_blocks == 4  # s0 s1 a0 b0


def test_last_prompt_token_is_never_a_hit() -> None:
    # identical 8-token prompts at B = 4: both blocks cached, only floor(7/4) = 1 can hit
    a, b = req("a", ("x", 8)), req("b", ("x", 8), t=1)
    assert hits([a, b], 4, [1, 2, 10]) == [1, 1, 1]


def test_blocks_touched_tail_first_so_head_survives() -> None:
    # after A (p0 p1 p2) a 2-block cache holds p0 p1, so B hits both; head-first
    # touching would have kept p1 p2 and B would hit nothing.
    a = req("a", ("p", 12))
    b = req("b", ("p", 12), ("z", 1), t=1)
    assert hits([a, b], 4, [1, 2, 3]) == [1, 2, 3]


def test_lru_eviction_order() -> None:
    a, b = req("a", ("a", 4)), req("b", ("b", 4), t=1)
    c = req("c", ("a", 4), ("q", 1), t=2)
    assert hits([a, b, c], 4, [0, 1, 2]) == [0, 0, 1]


def test_hit_is_longest_leading_run() -> None:
    # B = 2. A caches x0 x1 x2; B shares x0 only, then differs; C = A again:
    # at capacity 3 B pushed x1 x2 out (B's two blocks are newer), so C hits x0 only.
    a = req("a", ("x", 6), ("e", 1))
    b = req("b", ("x", 2), ("y", 4), ("e", 1), t=1)
    c = req("c", ("x", 6), ("e", 1), t=2)
    assert hits([a, b, c], 2, [3, 4, 5]) == [1 + 1, 1 + 2, 1 + 3]


def test_replay_order_is_stable_by_arrival_and_think_time() -> None:
    r1 = req("1", ("a", 1), t=5.0)
    r2 = req("2", ("a", 1), t=1.0)
    r3 = req("3", ("a", 1), t=1.0)
    s1 = Request("s1", (Segment("x", 1, "a"),), 1, arrival_s=2.0, session_id="s")
    s2 = Request("s2", (Segment("x", 1, "a"),), 1, arrival_s=None, think_time_s=0.5, session_id="s")
    order = [r.request_id for r in replay_order([r1, r2, r3, s1, s2])]
    assert order == ["2", "3", "s1", "s2", "1"]


# --------------------------------------------------------------------------- Mooncake blocks


def _moon(tmp_path: Path, ids: list[list[int]], n_in: int) -> list[Request]:
    p = tmp_path / "m.jsonl"
    rows = [
        {"timestamp": i, "input_length": n_in, "output_length": 1, "hash_ids": h}
        for i, h in enumerate(ids)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return list(read_mooncake(p).requests)


@pytest.mark.parametrize(("block_size", "expected"), [(512, 2), (256, 4), (16, 64), (384, 2)])
def test_mooncake_ids_share_exactly_at_any_block_size(
    tmp_path: Path, block_size: int, expected: int
) -> None:
    # ids [1, 2, 3] then [1, 2, 4], 1536 tokens: two equal 512-token blocks.
    # B = 384 does not divide 512: block 1 straddles ids 1 and 2 (shared), block 2
    # straddles ids 2 and 4 (not shared with ids 2 and 3).
    reqs = _moon(tmp_path, [[1, 2, 3], [1, 2, 4]], 1536)
    assert hits(reqs, block_size, [10**6]) == [expected]


def test_mooncake_partial_last_block_is_a_prefix_of_the_full_one(tmp_path: Path) -> None:
    # 700 tokens: ids [5, 6], the last covering 188 tokens; a later 1024-token
    # request with the same ids re-uses the partial block's full sub-blocks.
    p = tmp_path / "m.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 700, "output_length": 1, "hash_ids": [5, 6]},
        {"timestamp": 1, "input_length": 1024, "output_length": 1, "hash_ids": [5, 6]},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reqs = list(read_mooncake(p).requests)
    # B = 64: first request caches 10 blocks (8 of id 5, 2 of id 6 = 128 tokens);
    # second can hit floor(1023/64) = 15, finds those 10.
    assert hits(reqs, 64, [100]) == [10]


def test_library_calls_leave_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    def refuse() -> None:
        raise AssertionError("a library call switched the collector")

    for name in ("disable", "freeze", "set_threshold"):
        monkeypatch.setattr(gc, name, refuse)
    wl = load_workload("mooncake-conversation")
    assert cache_curve(wl.requests[:2000], 512, [100]).points[0].hit_blocks > 0
    assert gc.isenabled()


# --------------------------------------------------------------------------- errors


def test_only_lru_is_supported() -> None:
    with pytest.raises(ConfigError, match="only --policy lru"):
        cache_curve([req("a", ("a", 4))], 4, [1], policy="fifo")


@pytest.mark.parametrize(("block_size", "caps"), [(0, [1]), (4, [-1]), (4, [1.5])])
def test_bad_arguments(block_size: int, caps: list[int]) -> None:
    with pytest.raises(ConfigError):
        cache_curve([req("a", ("a", 4))], block_size, caps)


# --------------------------------------------------------------------------- properties

_segment = st.tuples(st.sampled_from("abcde"), st.integers(0, 14))
_request = st.tuples(st.lists(_segment, min_size=1, max_size=4), st.integers(0, 6))


def _requests(raw: list[tuple[list[tuple[str, int]], int]]) -> list[Request]:
    out = []
    for i, (segs, t) in enumerate(raw):
        if sum(n for _, n in segs) == 0:
            segs = [*segs, ("a", 1)]
        out.append(req(str(i), *segs, t=float(t)))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_request, min_size=1, max_size=14), st.sampled_from([1, 2, 3, 4, 5, 8]))
def test_fast_path_equals_block_by_block_replay(
    raw: list[tuple[list[tuple[str, int]], int]], block_size: int
) -> None:
    reqs = _requests(raw)
    caps = list(range(0, 30))
    fast = cache_curve(reqs, block_size, caps)
    assert fast == reference_cache_curve(reqs, block_size, caps)
    rates = [p.block_hit_rate for p in fast.points]
    assert rates == sorted(rates)  # LRU is a stack algorithm: never worse with more room
    assert fast.points[-1].hit_blocks <= fast.infinite.hit_blocks
    big = cache_curve(reqs, block_size, [fast.infinite.capacity_blocks])
    assert big.points[0].hit_blocks == fast.infinite.hit_blocks


_tree_request = st.lists(st.integers(0, 3), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(_tree_request, min_size=1, max_size=25), st.sampled_from([2, 3, 4, 6]))
def test_fast_path_equals_replay_on_shared_prefix_trees(
    paths: list[list[int]], block_size: int
) -> None:
    # conversation-like: prompts are paths in a small tree of 4-token chunks, so
    # many prompts share long prefixes (chunk content named by its whole path)
    reqs = []
    for i, path in enumerate(paths):
        segs = [(f"n{path[: k + 1]}", 4) for k in range(len(path))]
        reqs.append(req(str(i), *segs, ("tail", 1 + i % 3), t=float(i)))
    caps = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55]
    assert cache_curve(reqs, block_size, caps) == reference_cache_curve(reqs, block_size, caps)


@pytest.mark.parametrize("block_size", [64, 512])
def test_fast_path_equals_replay_on_a_real_trace_slice(block_size: int) -> None:
    wl = load_workload("mooncake-conversation")
    reqs = list(wl.requests[:400])
    caps = [0, 50, 500, 2_000, 10_000, 40_000]
    fast = cache_curve(reqs, block_size, caps)
    assert fast == reference_cache_curve(reqs, block_size, caps)
    assert fast.infinite.hit_blocks > 0


# --------------------------------------------------------------------------- CLI


def _tiny_mooncake(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 1024, "output_length": 3, "hash_ids": [0, 1]},
        {"timestamp": 5, "input_length": 1100, "output_length": 3, "hash_ids": [0, 1, 2]},
        {"timestamp": 9, "input_length": 600, "output_length": 3, "hash_ids": [0, 7]},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_cli_json_hand_computed(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvlab.cli.app import app

    p = _tiny_mooncake(tmp_path)
    res = CliRunner().invoke(
        app, ["cache-curve", str(p), "--block-size", "512", "--capacities", "0,1,2", "--json"]
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    # hittable: floor(1023/512) + floor(1099/512) + floor(599/512) = 1 + 2 + 1 = 4
    # cacheable: r1 [0, 1], r2 [0, 1] (its 76-token tail is partial), r3 [0].
    # r2 hits 0 (cap 1) or 0, 1 (cap 2); r3 hits block 0 at any capacity >= 1
    # (block 0 is always most recently used).
    assert d["num_hittable_blocks"] == 4 and d["num_prompt_tokens"] == 2724
    assert [(p["capacity_blocks"], p["hit_blocks"]) for p in d["points"]] == [
        (0, 0),
        (1, 2),
        (2, 3),
    ]
    assert d["points"][2]["block_hit_rate"] == 3 / 4
    assert d["points"][2]["token_hit_rate"] == 3 * 512 / 2724
    assert d["infinite"]["capacity_blocks"] == 2 and d["infinite"]["hit_blocks"] == 3


def test_cli_table_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from kvlab.cli.app import app

    png = tmp_path / "curve.png"
    res = CliRunner().invoke(
        app, ["cache-curve", str(_tiny_mooncake(tmp_path)), "-b", "256", "--plot", str(png)]
    )
    assert res.exit_code == 0, res.output
    assert "token hit rate" in res.output and "inf" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_other_policies(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvlab.cli.app import app

    res = CliRunner().invoke(app, ["cache-curve", str(_tiny_mooncake(tmp_path)), "--policy", "arc"])
    assert isinstance(res.exception, ConfigError)
    assert "only --policy lru" in str(res.exception)


def test_capacity_parsing() -> None:
    from kvlab.cli.cache_curve import _parse_capacities

    assert _parse_capacities("1000, 10k,2M,1_500", None) == [1000, 10_000, 2_000_000, 1500]
    assert _parse_capacities("1GiB,2GB", 2**20) == [1024, 1907]
    for bad in ("ten", "", "-3", "80GB"):
        with pytest.raises(ConfigError):
            _parse_capacities(bad, None)


def test_cli_model_sizes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import kvlab.models.catalog  # noqa: F401  (a broken catalog must fail here)
    from kvlab.cli.app import app

    args = ["cache-curve", str(_tiny_mooncake(tmp_path)), "-b", "512", "-c", "1GB", "--json"]
    res = CliRunner().invoke(app, [*args, "--model", "meta-llama/Llama-3.1-8B"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["block_bytes"] == 512 * 131_072  # REFERENCE: Llama-3.1-8B bf16 131,072 B/token
    assert d["points"][0]["capacity_blocks"] == 10**9 // (512 * 131_072)


@settings(max_examples=100, deadline=None)
@given(st.lists(_request, min_size=1, max_size=8), st.sampled_from([1, 2, 3, 4, 7]))
def test_block_keys_partition_equals_the_simulators(
    raw: list[tuple[list[tuple[str, int]], int]], block_size: int
) -> None:
    # the cache curve and the simulator must agree on which blocks are equal
    from kvlab.sim import hashing

    reqs = _requests(raw)
    table = BlockKeyTable()
    sim = hashing.ChainInterner()
    ours, theirs = [], []
    for r in reqs:
        ours += block_keys(r, block_size, table)
        segs = [(sim.content(s.content_id), s.tokens) for s in r.segments]
        theirs += sim.prompt_keys(segs, block_size)[0]
    assert len(ours) == len(theirs)
    pairs = set(zip(ours, theirs, strict=True))
    assert len(pairs) == len(set(ours)) == len(set(theirs))  # a bijection between keys
