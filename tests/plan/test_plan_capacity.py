"""Narrative tests: vLLM v1 KV capacity computed by hand for small, known configs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kvlab.errors import ConfigError
from kvlab.hardware import GIB
from kvlab.models.spec import LayerSpec, ModelSpec
from kvlab.plan import group_layers, layer_caches, plan

TEN_GIB = 10 * GIB


def test_llama_10gib_block16_matches_vllm_by_hand(llama: ModelSpec) -> None:
    # page = 16 tokens * 8 heads * (128 + 128) * 2 B = 64 KiB per layer; 32 layers -> 2 MiB.
    r = plan(llama, "h100-sxm", context_tokens=8192, kv_cache_memory_bytes=TEN_GIB)
    d = r.to_dict()
    assert d["bytes_per_block"] == 2 * 1024 * 1024
    assert d["num_gpu_blocks"] == 5120  # 10 GiB / 2 MiB
    assert d["blocks_per_request"] == 512  # cdiv(8192, 16)
    assert d["max_concurrency"] == 10.0  # 5120 / 512
    assert d["kv_cache_tokens"] == 81920  # int(10.0 * 8192)
    assert d["vllm_log"] == [
        "GPU KV cache size: 81,920 tokens",
        "Maximum concurrency for 8,192 tokens per request: 10.00x",
    ]
    assert d["kv_bytes_per_token"] == 131072
    assert d["sequence_bytes"] == 8192 * 131072
    assert d["fits"] is True
    assert d["groups"] == [
        {
            "kind": "full",
            "num_layers": 32,
            "block_size": 16,
            "page_bytes": 65536,
            "bytes_per_block": 2097152,
            "window": None,
            "blocks_per_request": 512,
        }
    ]


def test_llama_full_context_does_not_start_in_10gib(llama: ModelSpec) -> None:
    r = plan(llama, "h100-sxm", context_tokens=131072, kv_cache_memory_bytes=TEN_GIB)
    assert r.num_gpu_blocks == 5120
    assert r.max_concurrency == 0.625  # 5120 / 8192
    assert r.kv_cache_tokens == 81920
    assert r.sequence_bytes == 17_179_869_184  # 16 GiB
    assert r.vllm_starts is False
    # longest n with cdiv(n, 16) blocks <= 5120 - 1 (the null block): 5119 * 16
    assert r.estimated_max_model_len == 81904
    assert r.fits is False
    assert any("would not start" in x and "81,904" in x for x in r.reasons)
    assert any("short by" in x for x in r.reasons)


def test_fp8_halves_kv_bytes_and_doubles_blocks(llama: ModelSpec) -> None:
    bf16 = plan(llama, "h100", context_tokens=8192, kv_cache_memory_bytes=TEN_GIB)
    fp8 = plan(llama, "h100", context_tokens=8192, kv_cache_memory_bytes=TEN_GIB, kv_dtype="fp8")
    assert fp8.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token == 131072
    assert fp8.sequence_bytes * 2 == bf16.sequence_bytes
    assert fp8.num_gpu_blocks == 2 * bf16.num_gpu_blocks == 10240
    assert fp8.max_concurrency == 20.0
    assert fp8.kv_cache_tokens == 163840


def test_gpt_oss_sliding_and_full_groups_gpu_defaults(gpt_oss: ModelSpec) -> None:
    # 12 sliding + 12 full layers: two groups of 12; page 16 * 8 * (64 + 64) * 2 = 32 KiB.
    r = plan(gpt_oss, "h100-sxm", context_tokens=131072, kv_cache_memory_bytes=TEN_GIB)
    d = r.to_dict()
    assert [(g["kind"], g["num_layers"]) for g in d["groups"]] == [("sliding", 12), ("full", 12)]
    assert d["bytes_per_block"] == 12 * 32768
    assert d["num_gpu_blocks"] == 27306  # 10 GiB // 393,216
    # H100: max_num_batched_tokens 8192, async scheduling -> 16,384 tokens in flight.
    # sliding: cdiv(min(128 - 1 + 16384, 131072), 16) + 1 = 1033; full: 131072 / 16 = 8192.
    assert [g["blocks_per_request"] for g in d["groups"]] == [1033, 8192]
    assert d["blocks_per_request"] == 9225
    assert d["max_concurrency"] == pytest.approx(27306 / 9225)
    assert d["kv_cache_tokens"] == 387973  # int(27306 / 9225 * 131072)
    assert d["kv_bytes_per_token"] == 24576  # 12 full layers * 2048
    # one sequence: 12 full layers hold 131072 tokens, 12 sliding layers hold 128
    assert d["sequence_bytes"] == 12 * 2048 * 131072 + 12 * 2048 * 128


def test_gpt_oss_cpu_like_block128_no_async(gpt_oss: ModelSpec) -> None:
    # vLLM's CPU backend: block 128, 2048 batched tokens, async scheduling off.
    r = plan(
        gpt_oss,
        "h100",
        context_tokens=4096,
        block_size=128,
        kv_cache_memory_bytes=GIB,
        max_num_batched_tokens=2048,
        async_scheduling=False,
    )
    assert r.capacity.bytes_per_block == 12 * 128 * 8 * 128 * 2
    assert r.num_gpu_blocks == 341
    # sliding: cdiv(min(127 + 2048, 4096), 128) + 1 = 18; full: 4096 / 128 = 32
    assert r.capacity.blocks_per_request == 50
    assert r.max_concurrency == pytest.approx(6.82)
    assert r.kv_cache_tokens == 27934


def test_mamba_hybrid_block_alignment_and_groups(hybrid: ModelSpec) -> None:
    # Mamba page: (1,048,576 + 30,720) * 2 B = 2,158,592; attention 8 * 256 * 2 = 4096 B/token.
    # block = 16 * cdiv(2,158,592, 16 * 4096) = 528 tokens; Mamba padded to 528 * 4096.
    r = plan(hybrid, "h100", context_tokens=8192, kv_cache_memory_bytes=TEN_GIB)
    d = r.to_dict()
    assert d["block_size"] == 528
    assert d["requested_block_size"] == 16
    assert {g["page_bytes"] for g in d["groups"]} == {528 * 4096}
    # 4 attention layers -> group size 4; 24 Mamba layers -> 6 groups of 4
    assert [(g["kind"], g["num_layers"]) for g in d["groups"]] == [("mamba", 4)] * 6 + [("full", 4)]
    assert d["bytes_per_block"] == 4 * 528 * 4096 == 8_650_752
    assert d["num_gpu_blocks"] == 1241
    # full: cdiv(8192, 528) = 16; each Mamba group: 2 pages with prefix caching ("align" mode)
    assert d["blocks_per_request"] == 16 + 6 * 2
    assert d["max_concurrency"] == pytest.approx(1241 / 28)
    assert d["kv_cache_tokens"] == 363081
    assert d["state_bytes_per_sequence"] == 24 * 2_158_592
    assert d["kv_bytes_per_token"] == 4 * 4096
    assert any("528" in n for n in d["notes"])


def test_mamba_without_prefix_caching_keeps_one_state_page(hybrid: ModelSpec) -> None:
    r = plan(
        hybrid,
        "h100",
        context_tokens=8192,
        kv_cache_memory_bytes=TEN_GIB,
        enable_prefix_caching=False,
    )
    assert r.capacity.blocks_per_request == 16 + 6
    assert r.kv_cache_tokens == 462103  # int(1241 / 22 * 8192)


def test_fp32_ssm_state_grows_the_block(hybrid: ModelSpec) -> None:
    spec = dataclasses.replace(hybrid, state_dtype="float32")
    # conv in the model dtype (bf16), SSM state in fp32: 30,720 * 2 + 1,048,576 * 4
    caches = layer_caches(spec, block_size=16)
    assert caches[-1].block_size == 16 * 65 == 1040
    assert plan(spec, "h100", kv_cache_memory_bytes=GIB).state_bytes_per_sequence == 24 * 4_255_744


def test_mla_page_is_one_latent_and_not_sharded(mla: ModelSpec) -> None:
    r1 = plan(mla, "h200", context_tokens=4096, kv_cache_memory_bytes=TEN_GIB)
    assert r1.capacity.bytes_per_block == 61 * 16 * 576 * 2
    assert r1.num_gpu_blocks == 9549
    assert r1.kv_bytes_per_token == 70272
    caches_tp8 = layer_caches(mla, tp=8)
    assert {c.page_bytes for c in caches_tp8} == {16 * 576 * 2}


def test_grouping_pads_to_the_smaller_kind() -> None:
    # 2 full + 5 sliding (same page): group size 2 -> full (2), sliding 3 groups [3, 1?]
    full = LayerSpec("full", num_kv_heads=1, head_dim=8)
    swa = LayerSpec("sliding", num_kv_heads=1, head_dim=8, window=32)
    caches = layer_caches(
        ModelSpec("toy", "Toy", (full, swa, swa, full, swa, swa, swa), 8, 1, 10, 1, 1, 64),
        block_size=16,
    )
    groups = group_layers(caches)
    assert [(g.kind, len(g.layers)) for g in groups] == [
        ("full", 2),
        ("sliding", 2),
        ("sliding", 2),
        ("sliding", 1),
    ]
    assert max(g.bytes_per_block for g in groups) == 2 * 16 * 16 * 2


def test_estimated_memory_breakdown(llama: ModelSpec) -> None:
    r = plan(llama, "h100-sxm")
    assert r.context_tokens == 131072  # the model's max context by default
    assert r.gpu_memory_bytes == 81559 * 2**20
    requested = -(-r.gpu_memory_bytes * 92 // 100)
    assert r.available_kv_bytes == requested - r.weights_bytes - r.overhead_bytes
    assert r.weights_bytes == 2 * 8_030_261_248
    assert r.overhead.activation_bytes == 18 * 8192 * 4096 * 2
    assert r.kv_memory_source == "estimated"
    assert r.max_num_batched_tokens == 8192 and r.max_num_seqs == 1024
    assert r.num_gpu_blocks == r.available_kv_bytes // (2 * 2**20)


def test_weights_do_not_fit(llama: ModelSpec) -> None:
    big = dataclasses.replace(llama, num_params=40_000_000_000, num_active_params=40_000_000_000)
    r = plan(big, "l4", context_tokens=4096)
    assert not r.fits
    assert "weights need 74.51 GiB per GPU" in r.reasons[0]


def test_concurrency_verdict_reasons(llama: ModelSpec) -> None:
    ok = plan(llama, "h100", context_tokens=8192, kv_cache_memory_bytes=TEN_GIB, concurrency=9)
    assert ok.fits and "4,608 of 5,119 usable blocks" in ok.reasons[0]
    # 10 x 512 = 5120 blocks, but block 0 is the null block: short by one 2 MiB block
    bad = plan(llama, "h100", context_tokens=8192, kv_cache_memory_bytes=TEN_GIB, concurrency=10)
    assert not bad.fits
    assert "needs 5,120 blocks" in bad.reasons[0] and "short by 2.00 MiB" in bad.reasons[0]
    many = plan(llama, "l4", context_tokens=128, kv_cache_memory_bytes=TEN_GIB, concurrency=300)
    assert any("max_num_seqs=256" in x for x in many.reasons)
    long = plan(llama, "h100", context_tokens=262144, kv_cache_memory_bytes=80 * GIB)
    assert any("exceeds the model's maximum of 131,072" in x for x in long.reasons)


def test_whatifs(llama: ModelSpec) -> None:
    r = plan(llama, "h100", context_tokens=8192, kv_cache_memory_bytes=TEN_GIB, offload_gb=64)
    rows = {w["what"]: w for w in r.to_dict()["whatifs"]}
    assert rows["KV cache in fp8"]["num_gpu_blocks"] == 10240
    assert rows["KV cache in fp8"]["concurrency_ratio"] == 2.0
    # kv_cache_memory_bytes is per GPU: TP 2 halves the heads per GPU and doubles the blocks
    assert rows["TP 2"]["num_gpu_blocks"] == 10240
    assert rows["TP 8"]["num_gpu_blocks"] == 40960
    assert rows["half context (4,096 tokens)"]["max_concurrency"] == 20.0
    assert rows["quarter context (2,048 tokens)"]["max_concurrency"] == 40.0
    # 10 GiB is a multiple of every block size's bytes: no change for full attention
    assert "skipped" in rows["block size 32"] and "skipped" in rows["block size 64"]
    off = rows["CPU offload tier of 64 GiB"]
    assert off["parked_sequences"] == 64 * GIB // (8192 * 131072)  # 64 sequences of 1 GiB
    assert off["reload_s_per_sequence"] == pytest.approx(10e-6 + GIB / 64e9)


def test_whatif_block_size_changes_sliding_capacity(gpt_oss: ModelSpec) -> None:
    r = plan(gpt_oss, "h100", context_tokens=32768, kv_cache_memory_bytes=TEN_GIB)
    rows = {w["what"]: w for w in r.to_dict()["whatifs"]}
    assert "skipped" not in rows["block size 64"]
    assert rows["block size 64"]["block_size"] == 64


def test_whatif_skips_invalid_tp_and_unified_offload() -> None:
    full = LayerSpec("full", num_kv_heads=4, head_dim=64)
    spec = ModelSpec("toy-12h", "Toy", (full,) * 4, 768, 12, 1000, 10**8, 10**8, 2048)
    r = plan(spec, "dgx-spark", kv_cache_memory_bytes=GIB, offload_gb=8)
    rows = {w["what"]: w for w in r.to_dict()["whatifs"]}
    assert "does not divide the 12 attention heads" in rows["TP 8"]["skipped"]
    assert "TP 2" in rows and "skipped" not in rows["TP 2"]
    assert "unified memory" in rows["CPU offload tier of 8 GiB"]["skipped"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context_tokens": -1}, "context must be >= 1"),
        ({"tp": 3}, "does not divide"),
        ({"gpu_memory_utilization": 0.0}, "(0, 1]"),
        ({"gpu_memory_utilization": 1.5}, "(0, 1]"),
        ({"concurrency": 0}, "concurrency must be >= 1"),
        ({"kv_dtype": "fp7"}, "unknown dtype"),
        ({"offload_gb": -1.0}, "offload size"),
        ({"kv_cache_memory_bytes": 0}, "kv cache memory"),
    ],
)
def test_bad_input_raises_config_error(llama: ModelSpec, kwargs: dict, message: str) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        plan(llama, "h100", **kwargs)


def test_unknown_gpu(llama: ModelSpec) -> None:
    with pytest.raises(ConfigError, match="did you mean"):
        plan(llama, "h10O")


def test_to_dict_is_json_with_required_keys(llama: ModelSpec) -> None:
    d = plan(llama, "h100").to_dict()
    json.dumps(d)
    required = set(
        [
            "model",
            "gpu",
            "kv_dtype",
            "tp",
            "context_tokens",
            "kv_bytes_per_token",
            "sequence_bytes",
            "state_bytes_per_sequence",
            "weights_bytes",
            "available_kv_bytes",
            "block_size",
            "num_gpu_blocks",
            "kv_cache_tokens",
            "max_concurrency",
            "fits",
            "reasons",
            "overhead_bytes",
            "gpu_memory_bytes",
            "gpu_memory_utilization",
            "concurrency",
            "whatifs",
        ]
    )
    assert required <= set(d)
    assert all(isinstance(x, str) for x in d["reasons"])


def test_default_block_size_follows_vllm_backends(mla: ModelSpec, llama: ModelSpec) -> None:
    # Hopper: FlashAttention MLA takes multiples of 16; Blackwell: FlashInfer MLA takes 32/64.
    assert plan(mla, "h200", kv_cache_memory_bytes=GIB, context_tokens=4096).block_size == 16
    assert plan(mla, "b200", kv_cache_memory_bytes=GIB, context_tokens=4096).block_size == 32
    assert plan(llama, "b200", kv_cache_memory_bytes=GIB, context_tokens=4096).block_size == 16
    assert plan(mla, "b200", kv_cache_memory_bytes=GIB, block_size=64).block_size == 64


def test_weight_dtype_overrides_the_model_dtype(llama: ModelSpec) -> None:
    bf16 = plan(llama, "l4", context_tokens=4096)
    fp8 = plan(llama, "l4", context_tokens=4096, weight_dtype="fp8")
    assert fp8.weights_bytes * 2 == bf16.weights_bytes
    assert fp8.available_kv_bytes == bf16.available_kv_bytes + fp8.weights_bytes
    assert fp8.to_dict()["weight_dtype"] == "fp8"
