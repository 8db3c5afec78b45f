"""The hybrid KV cache inside the engine: chosen for sliding-window models, recorded in
provenance, windows freed, decode windows equal to exact steps, full-attention models
unchanged."""

from __future__ import annotations

from sim_helpers import Gpu, llama8b, random_workload, req
from test_macro_steps import comparable

from kvlab.models.spec import LayerSpec, ModelSpec
from kvlab.sim.block_pool import BlockPool
from kvlab.sim.config import SimConfig
from kvlab.sim.engine import Engine, simulate
from kvlab.sim.hybrid import GroupRule, HybridKV, group_rules
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
    rules, why = group_rules(nemotron_tiny(), kv_dtype=None, tp=1, block_size=16)
    assert rules is None and why is not None and "Mamba" in why


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


def test_mamba_models_fall_back_and_say_why() -> None:
    w = Workload((req("a", [("x", 20)], 3),))
    r = simulate(w, cfg(nemotron_tiny(), block_size=16))
    assert r.provenance["kv_pool"] in ("extent", "block")
    assert "Mamba" in str(r.provenance["kv_pool_reason"])
