"""The hybrid KV cache inside the engine: chosen for sliding-window and Mamba models,
recorded in provenance, windows and old states freed, decode windows equal to exact
steps, full-attention models unchanged."""

from __future__ import annotations

from sim_helpers import Gpu, llama8b, random_workload, req
from test_macro_steps import comparable

from kvlab.models.spec import LayerSpec, ModelSpec
from kvlab.sim.block_pool import BlockPool
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import Engine, simulate
from kvlab.sim.hybrid import GroupRule, HybridKV, group_rules, state_block_size
from kvlab.workload.records import Workload


def gpt_oss_tiny(window: int = 16) -> ModelSpec:
    """gpt-oss's pattern (sliding and full attention alternating), 4 layers."""
    sliding = LayerSpec("sliding", num_kv_heads=2, head_dim=16, window=window)
    full = LayerSpec("full", num_kv_heads=2, head_dim=16)
    return ModelSpec(
        name="gpt-oss-tiny",
        architecture="GptOssForCausalLM",
        layers=(sliding, full, sliding, full),
        hidden_size=64,
        num_attention_heads=4,
        vocab_size=1000,
        num_params=10_000_000,
        num_active_params=10_000_000,
        max_context=4096,
        head_dim=16,
    )


def nemotron_tiny() -> ModelSpec:
    mamba = LayerSpec("mamba2", state_elems=4096, conv_elems=512, state_heads=4)
    full = LayerSpec("full", num_kv_heads=2, head_dim=16)
    return ModelSpec(
        name="nemotron-tiny",
        architecture="NemotronHForCausalLM",
        layers=(mamba, mamba, full, mamba),
        hidden_size=64,
        num_attention_heads=4,
        vocab_size=1000,
        num_params=10_000_000,
        num_active_params=10_000_000,
        max_context=4096,
        head_dim=16,
    )


def cfg(model: ModelSpec, **kw: object) -> SimConfig:
    base: dict[str, object] = dict(model=model, gpu=Gpu(), block_size=4, num_blocks=64)
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def test_group_rules_follow_the_plans_groups() -> None:
    rules, why = group_rules(gpt_oss_tiny(), kv_dtype=None, tp=1, block_size=4)
    assert rules == (GroupRule("sliding", 16), GroupRule("full"))
    assert why is None
    assert group_rules(llama8b(), kv_dtype=None, tp=1, block_size=16) == (None, None)
    # vLLM raises the block size until an attention page holds a Mamba state page:
    # 2 heads x 16 x (K + V) x 2 bytes = 128 B a token; a state page is 9,216 B
    assert state_block_size(nemotron_tiny(), kv_dtype=None, tp=1, block_size=16) == 80
    rules, why = group_rules(nemotron_tiny(), kv_dtype=None, tp=1, block_size=80)
    assert rules == (GroupRule("mamba"),) * 3 + (GroupRule("full"),)
    assert why is None
    rules, why = group_rules(nemotron_tiny(), kv_dtype=None, tp=1, block_size=16)
    assert rules is None and why is not None and "80-token blocks" in why


def test_sliding_model_runs_on_the_hybrid_cache() -> None:
    w = Workload((req("a", [("x", 40)], 10),))
    e = Engine(w, cfg(gpt_oss_tiny()))
    assert e.kv_choice.pool == "hybrid"
    assert e.kv_choice.reason == "2 KV cache groups (sliding 16, full)"
    r = e.run()
    assert r.provenance["kv_pool"] == "hybrid"
    # 50 tokens of KV (49 with KV): the full group holds 13 blocks of 4, the sliding
    # group only the window's; at the end all are free again (keyed ones cached).
    assert e.pool.num_free == 63


def test_window_blocks_are_freed_while_the_request_runs() -> None:
    pool = BlockPool(40)
    kv = HybridKV(pool, 4, 1024, [GroupRule("sliding", 8), GroupRule("full")])

    class S:
        def __init__(self) -> None:
            self.num_tokens, self.num_computed, self.nblocks, self.num_cached_blocks = 40, 0, 0, 0
            self.tables: list[list[int]] = []
            self.cached: list[int] = []
            self.admitted = False
            self.keys = list(range(10))
            self.prompt_len = 40

        def ensure_keys(self, n: int) -> None:
            pass

    s = S()
    hit = kv.lookup_seq(s)  # type: ignore[arg-type]
    assert len(hit) == 0
    assert kv.admit(s, 40, hit) == []  # type: ignore[arg-type]
    assert pool.num_free == 39 - 20  # 10 blocks in each group
    s.num_computed = 40
    assert kv.extend(s, 1)  # type: ignore[arg-type]
    # the window of token 40 starts at token 33: blocks 0..7 of the sliding group go
    assert s.tables[0][:8] == [0] * 8 and 0 not in s.tables[1]
    assert pool.num_free == 39 - 22 + 8


def test_decode_windows_match_exact_steps() -> None:
    w = random_workload(3, 40)
    for blocks in (120, 400):
        kw: dict[str, object] = dict(num_blocks=blocks, block_size=16)
        a = simulate(w, cfg(gpt_oss_tiny(), **kw))
        b = simulate(w, cfg(gpt_oss_tiny(), exact_steps=True, **kw))
        assert a.provenance["kv_pool"] == "hybrid"
        assert comparable(a) == comparable(b)


def test_sliding_windows_hold_fewer_blocks_than_full_attention() -> None:
    """Under pressure the hybrid cache preempts less than if every layer were full."""
    w = random_workload(5, 60)
    hybrid = simulate(w, cfg(gpt_oss_tiny(window=8), num_blocks=120, block_size=16))
    full = simulate(w, cfg(llama8b(), num_blocks=60, block_size=16))  # one group, half
    assert hybrid.provenance["kv_pool"] == "hybrid"
    assert hybrid.summary["num_preemptions"] <= full.summary["num_preemptions"]


def test_mamba_model_runs_on_the_hybrid_cache_with_vllms_block_size() -> None:
    w = Workload((req("a", [("x", 200)], 3),))
    r = simulate(w, cfg(nemotron_tiny(), block_size=16))
    assert r.provenance["kv_pool"] == "hybrid"
    assert r.provenance["kv_pool_reason"] == "4 KV cache groups (3 mamba state in align mode, full)"
    assert r.summary["block_size"] == 80
    off = simulate(w, cfg(nemotron_tiny(), block_size=16, enable_prefix_caching=False))
    reason = off.provenance["kv_pool_reason"]
    assert reason == "4 KV cache groups (3 mamba state in none mode, full)"


class _S:
    """The request state HybridKV keeps, for driving it by hand."""

    def __init__(self, num_tokens: int) -> None:
        self.num_tokens, self.num_computed = num_tokens, 0
        self.nblocks = self.num_cached_blocks = 0
        self.tables: list[list[int]] = []
        self.cached: list[int] = []
        self.admitted = False
        self.keys = list(range(num_tokens // 4))
        self.prompt_len = num_tokens
        self.junction = 0
        self.state_last: int | None = None
        self.state_retired = 0

    def ensure_keys(self, n: int) -> None:
        pass


def test_a_state_group_holds_one_block_where_attention_holds_all() -> None:
    pool = BlockPool(40)
    kv = HybridKV(pool, 4, 1024, [GroupRule("mamba"), GroupRule("full")])
    s = _S(40)
    assert kv.admit(s, 40, kv.lookup_seq(s)) == []  # type: ignore[arg-type]
    # the full group: 10 blocks; the state group: the state after token 40, in the
    # last position of a position-indexed table (the null block before it)
    assert s.tables[0][:9] == [0] * 9 and s.tables[0][9] != 0
    assert 0 not in s.tables[1] and pool.num_free == 39 - 11
    s.num_computed = 40
    assert kv.extend(s, 1)  # type: ignore[arg-type]
    assert pool.num_free == 39 - 13  # a new state block, the old one still held
    s.num_computed = 41
    assert kv.extend(s, 1)  # type: ignore[arg-type]
    assert pool.num_free == 39 - 12  # the old state (after token 40) freed
    assert [b for b in s.tables[0] if b] == [s.tables[0][10]]
    kv.free(s)  # type: ignore[arg-type]
    # the state after token 40 (block 9) is keyed: a new request hits it, one block
    t = _S(44)
    hit = kv.lookup_seq(t)  # type: ignore[arg-type]
    assert len(hit) == 10 and hit.blocks[0][:9] == [0] * 9
    without = HybridKV(BlockPool(40, enable_caching=False), 4, 1024, [GroupRule("mamba")])
    u = _S(40)
    assert without.admit(u, 40, without.lookup_seq(u)) == []  # type: ignore[arg-type]
    assert len(u.tables[0]) == 1  # "none" mode: one block of max_model_len tokens


def test_a_resent_prompt_hits_the_state_at_its_last_boundary() -> None:
    """vLLM's scheduler stops the first prefill chunk at 160 (the last 80-token boundary
    before the last of 200 tokens) so that state is kept; the same prompt later hits
    it: 160 tokens, the attention blocks cut to the state's length."""
    w = Workload((req("a", [("x", 200)], 3), req("b", [("x", 200)], 3, t=10.0)))
    r = simulate(w, cfg(nemotron_tiny(), block_size=16))
    assert r.summary["prefix_cache_hits"] == 160
    # an exact run takes one more step for the clipped chunk (160 + 40 tokens)
    full = simulate(w, cfg(gpt_oss_tiny(), block_size=80, num_blocks=64))
    assert r.summary["num_steps"] == full.summary["num_steps"] + 1


def test_a_chunk_ends_on_a_block_boundary_or_waits() -> None:
    kv = HybridKV(BlockPool(40), 4, 1024, [GroupRule("mamba"), GroupRule("full")])
    s = _S(40)
    assert kv.clip_chunk(s, 0, 10, 100) == 8  # the boundary before 10
    assert kv.clip_chunk(s, 0, 3, 100) == 0  # no boundary: the request waits a step
    assert kv.clip_chunk(s, 0, 3, 2) == 3  # a block wider than a step's tokens: no wait
    assert kv.clip_chunk(s, 2, 30, 100) == 2  # from inside a block: to the next boundary
    assert kv.clip_chunk(s, 0, 40, 100) == 36  # the last boundary before token 40
    assert kv.clip_chunk(s, 36, 4, 100) == 4  # the end of the prefill
    s.junction = 13
    assert kv.clip_chunk(s, 0, 36, 100) == 12  # the shared-prefix junction, floored
    attention = HybridKV(BlockPool(40), 4, 1024, [GroupRule("sliding", 8), GroupRule("full")])
    assert attention.clip_chunk(s, 0, 10, 100) == 10
