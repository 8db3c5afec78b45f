"""ModelSpec: what a model's layers keep per sequence, and the pure KV-memory formulas.

Every layer has one kind (REFERENCE section 1):

``full``
    full attention; grows ``2 * kv_heads * head_dim * b`` bytes per token
    (K and V; ``head_dim_v`` when V differs from K).
``sliding``
    sliding-window attention of ``window`` tokens: the same bytes per token,
    but the layer holds at most ``window`` tokens of a sequence.
``mla``
    multi-head latent attention (DeepSeek-V2/V3): one latent of
    ``kv_lora_rank + qk_rope_head_dim`` elements per token, no separate V,
    not sharded by tensor parallelism (every rank holds the whole latent).
``mamba1`` / ``mamba2`` / ``linear``
    recurrent layers (Mamba-1, Mamba-2, Gated DeltaNet): nothing per token,
    a fixed state per sequence of ``state_elems`` (SSM / recurrent state)
    plus ``conv_elems`` (convolution state) elements, in the state dtype.

Units: bytes are per GPU; ``tp`` shards attention heads
(``max(1, kv_heads // tp)`` per GPU, replicated when ``tp > kv_heads``) and
recurrent heads; MLA latents are replicated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import ConfigError

LAYER_KINDS: tuple[str, ...] = ("full", "sliding", "mla", "mamba1", "mamba2", "linear")
ATTENTION_KINDS: frozenset[str] = frozenset({"full", "sliding", "mla"})
RECURRENT_KINDS: frozenset[str] = frozenset({"mamba1", "mamba2", "linear"})

#: Bytes per element of each KV cache dtype. int4 stores 0.5 byte per element
#: plus one fp16 scale per group of INT4_GROUP elements (group-wise quantization).
INT4_GROUP = 32
DTYPE_BYTES: dict[str, float] = {
    "float32": 4.0,
    "fp32": 4.0,
    "bfloat16": 2.0,
    "bf16": 2.0,
    "float16": 2.0,
    "fp16": 2.0,
    "auto": 2.0,
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
    "int8": 1.0,
    "int4": 0.5 + 2.0 / INT4_GROUP,
}
KV_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp8", "int8", "int4")

#: Parameter categories of :attr:`ModelSpec.param_breakdown` (see :class:`WeightFormat`):
#: ``embedding`` input embeddings (OPT: + learned positions and projections), ``lm_head``
#: an untied output head, ``attention`` attention projection matrices (q/k/v/o, MLA's
#: low-rank projections), ``mlp`` dense MLP matrices, ``experts`` routed MoE expert
#: matrices, ``shared_experts`` shared-expert matrices (+ Qwen3-Next's shared gate),
#: ``router`` MoE router weights and biases, ``recurrent`` whole Mamba / Gated DeltaNet
#: mixers, ``norms`` every norm, ``biases`` biases of the linears above and other
#: per-channel vectors (gpt-oss attention sinks, DeepSeek's router score correction).
PARAM_CATEGORIES: tuple[str, ...] = (
    "embedding",
    "lm_head",
    "attention",
    "mlp",
    "experts",
    "shared_experts",
    "router",
    "recurrent",
    "norms",
    "biases",
)

#: Weight formats a checkpoint can ship in besides its dtype (``quantization_config``).
#: mxfp4: OCP Microscaling Formats (MX) v1.0, section 5: blocks of 32 FP4 (E2M1) values,
#: 4 bits each, share one 8-bit E8M0 scale = 4.25 bits per weight.
#: fp8: one byte per weight (E4M3) plus one float32 inverse scale per
#: ``weight_block_size`` block (DeepSeek-V3 config.json: [128, 128]).
WEIGHT_QUANT_METHODS: tuple[str, ...] = ("fp8", "mxfp4")
MXFP4_BLOCK = 32
MXFP4_SCALE_BYTES = 1.0  # E8M0
FP8_SCALE_BYTES = 4.0  # float32 weight_scale_inv


@dataclass(frozen=True, slots=True)
class WeightFormat:
    """How a checkpoint stores its weights, from its ``quantization_config``.

    ``method`` is one of :data:`WEIGHT_QUANT_METHODS`; ``categories`` are the
    :data:`PARAM_CATEGORIES` stored in that format, every other parameter is in the
    model dtype. ``block_size`` is FP8's (rows, cols) scale block, None for per-tensor
    scales (priced as no scale bytes).
    """

    method: str
    categories: tuple[str, ...]
    block_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.method not in WEIGHT_QUANT_METHODS:
            raise ConfigError(
                f"unknown weight format {self.method!r}; known: {', '.join(WEIGHT_QUANT_METHODS)}"
            )
        unknown = set(self.categories) - set(PARAM_CATEGORIES)
        if unknown:
            raise ConfigError(f"unknown parameter categories {sorted(unknown)}")

    def bytes_per_param(self) -> float:
        """Bytes per quantized weight, scales included (partial blocks not padded)."""
        if self.method == "mxfp4":
            return 0.5 + MXFP4_SCALE_BYTES / MXFP4_BLOCK
        if self.block_size is None:
            return 1.0
        return 1.0 + FP8_SCALE_BYTES / (self.block_size[0] * self.block_size[1])


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of ``dtype`` (see :data:`DTYPE_BYTES`)."""
    try:
        return DTYPE_BYTES[dtype.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown dtype {dtype!r}; choose one of {', '.join(KV_DTYPES)} (or float32)"
        ) from None


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One decoder layer's per-sequence memory shape (see the module docstring)."""

    kind: str
    num_kv_heads: int = 0
    head_dim: int = 0
    head_dim_v: int | None = None
    window: int | None = None
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    state_elems: int = 0
    conv_elems: int = 0
    state_heads: int = 0

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ConfigError(f"unknown layer kind {self.kind!r}; known: {', '.join(LAYER_KINDS)}")
        if self.kind == "sliding" and (self.window is None or self.window < 1):
            raise ConfigError("a sliding layer needs window >= 1")

    @property
    def v_dim(self) -> int:
        return self.head_dim if self.head_dim_v is None else self.head_dim_v

    def kv_heads_per_gpu(self, tp: int = 1) -> int:
        """KV heads one GPU holds at tensor parallel ``tp``."""
        return max(1, self.num_kv_heads // tp)

    def elems_per_token(self, tp: int = 1) -> int:
        """KV elements one token adds to this layer on one GPU (0 for recurrent layers)."""
        if self.kind in ("full", "sliding"):
            return self.kv_heads_per_gpu(tp) * (self.head_dim + self.v_dim)
        if self.kind == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 0

    def _state_shards(self, tp: int) -> int:
        return min(tp, self.state_heads) if self.state_heads else 1

    def ssm_elems_per_gpu(self, tp: int = 1) -> int:
        """SSM / recurrent state elements of one sequence on one GPU (sharded by heads)."""
        if self.kind not in RECURRENT_KINDS:
            return 0
        return math.ceil(self.state_elems / self._state_shards(tp))

    def conv_elems_per_gpu(self, tp: int = 1) -> int:
        """Convolution state elements of one sequence on one GPU (sharded by heads)."""
        if self.kind not in RECURRENT_KINDS:
            return 0
        return math.ceil(self.conv_elems / self._state_shards(tp))

    def state_elems_per_gpu(self, tp: int = 1) -> int:
        """Recurrent state elements (SSM + conv) of one sequence on one GPU."""
        return self.ssm_elems_per_gpu(tp) + self.conv_elems_per_gpu(tp)

    def tokens_held(self, seq_len: int) -> int:
        """Tokens of a sequence of ``seq_len`` this layer keeps."""
        if self.kind == "sliding":
            assert self.window is not None
            return min(seq_len, self.window)
        if self.kind in RECURRENT_KINDS:
            return 0
        return seq_len


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model's architecture as far as memory is concerned.

    ``layers`` lists the layers that keep per-sequence memory (attention and recurrent
    mixers), in model order; blocks made only of an MLP or MoE (Nemotron-H's ``-`` and
    ``E``) hold none and are not listed, so ``num_layers`` can be below the config's
    ``num_hidden_layers``.

    ``num_params`` counts every weight once (tied embeddings once);
    ``num_active_params`` counts those used per token (MoE: routed experts
    actually selected plus shared ones); both come from the config.
    ``dtype`` is the weights' dtype; KV and the convolution state default to it;
    ``state_dtype`` is the SSM / recurrent state's dtype (vLLM's ``mamba_ssm_cache_dtype``:
    ``auto`` means the model dtype, except NemotronH whose default is the config's
    ``mamba_ssm_cache_dtype`` or float32; vllm/model_executor/models/config.py).

    ``param_breakdown`` splits ``num_params`` by :data:`PARAM_CATEGORIES` as
    ``(category, count)`` pairs (categories present only; empty for hand-built specs;
    the counts sum to ``num_params``). ``weight_format`` is the checkpoint's quantized
    format (None: every weight ships in ``dtype``); it needs ``param_breakdown``.
    """

    name: str
    architecture: str
    layers: tuple[LayerSpec, ...]
    hidden_size: int
    num_attention_heads: int
    vocab_size: int
    num_params: int
    num_active_params: int
    max_context: int
    dtype: str = "bfloat16"
    state_dtype: str = "bfloat16"
    aliases: tuple[str, ...] = field(default=())
    head_dim: int = 0
    description: str = ""
    param_breakdown: tuple[tuple[str, int], ...] = field(default=())
    weight_format: WeightFormat | None = None

    @classmethod
    def from_hf_config(cls, config: Any, name: str | None = None) -> ModelSpec:
        """Parse a Hugging Face config (dict, config.json path or directory).

        A thin entry point to :func:`kvlab.models.hf.from_hf_config`, imported when
        called: the parsers depend on this module, never the other way round.
        """
        from kvlab.models.hf import from_hf_config

        return from_hf_config(config, name=name)

    def __post_init__(self) -> None:
        if self.param_breakdown:
            total = sum(n for _, n in self.param_breakdown)
            if total != self.num_params:
                raise ConfigError(
                    f"param_breakdown of {self.name} sums to {total}, not num_params "
                    f"{self.num_params}"
                )
        elif self.weight_format is not None:
            raise ConfigError(f"{self.name}: a weight_format needs a param_breakdown")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def params_in(self, *categories: str) -> int:
        """Parameters of the given :data:`PARAM_CATEGORIES` (0 without a breakdown)."""
        return sum(n for c, n in self.param_breakdown if c in categories)

    @property
    def is_moe(self) -> bool:
        return self.num_active_params < self.num_params

    def count(self, kind: str) -> int:
        return sum(1 for layer in self.layers if layer.kind == kind)

    @property
    def attention_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(x for x in self.layers if x.kind in ATTENTION_KINDS)

    @property
    def max_kv_heads(self) -> int:
        return max(
            (x.num_kv_heads for x in self.layers if x.kind in ("full", "sliding")), default=0
        )


# ---------------------------------------------------------------------------
# Pure formulas. ``kv_dtype`` None means the model's dtype.
# ---------------------------------------------------------------------------


def check_tp(spec: ModelSpec, tp: int) -> None:
    """Raise ConfigError unless ``tp`` shards the model's heads evenly.

    KV heads: ``tp`` must divide them, or be a multiple of them (replication,
    as vLLM does when tp > num_kv_heads). Query heads must divide by ``tp``.
    """
    if tp < 1:
        raise ConfigError(f"tensor parallel size must be >= 1, got {tp}")
    if tp == 1:
        return
    if spec.num_attention_heads and spec.num_attention_heads % tp:
        raise ConfigError(
            f"TP {tp} does not divide the {spec.num_attention_heads} attention heads of {spec.name}"
        )
    for h in {x.num_kv_heads for x in spec.layers if x.kind in ("full", "sliding")}:
        if h and h % tp and tp % h:
            raise ConfigError(
                f"TP {tp} neither divides nor is a multiple of the {h} KV heads of {spec.name}"
            )


def _kv_b(spec: ModelSpec, kv_dtype: str | None) -> float:
    return dtype_bytes(kv_dtype or spec.dtype)


def layer_bytes_per_token(layer: LayerSpec, kv_dtype: str | float = "bf16", tp: int = 1) -> float:
    """Bytes one token adds to one layer on one GPU."""
    b = kv_dtype if isinstance(kv_dtype, float) else dtype_bytes(kv_dtype)
    return layer.elems_per_token(tp) * b


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str | None = None, tp: int = 1) -> float:
    """Growing KV bytes per token of one sequence, per GPU: full attention and MLA layers.

    Sliding layers stop growing at their window and recurrent layers never
    grow, so neither counts here (REFERENCE section 1 goldens).
    """
    check_tp(spec, tp)
    b = _kv_b(spec, kv_dtype)
    return sum(x.elems_per_token(tp) * b for x in spec.layers if x.kind in ("full", "mla"))


def state_bytes_per_sequence(spec: ModelSpec, tp: int = 1, state_dtype: str | None = None) -> float:
    """Fixed recurrent-state bytes of one sequence, per GPU (Mamba / linear layers).

    The SSM / recurrent state is kept in ``state_dtype`` (default ``spec.state_dtype``),
    the convolution state in the model dtype, as vLLM's MambaStateDtypeCalculator does
    (conv dtype = cache dtype ``auto``; temporal state = ``mamba_ssm_cache_dtype``).
    """
    check_tp(spec, tp)
    b_ssm = dtype_bytes(state_dtype or spec.state_dtype)
    b_conv = dtype_bytes(spec.dtype)
    return sum(
        x.ssm_elems_per_gpu(tp) * b_ssm + x.conv_elems_per_gpu(tp) * b_conv for x in spec.layers
    )


def sliding_cap_bytes(spec: ModelSpec, kv_dtype: str | None = None, tp: int = 1) -> float:
    """Bytes the sliding-window layers of one sequence hold at most (all windows full)."""
    check_tp(spec, tp)
    b = _kv_b(spec, kv_dtype)
    return sum(
        x.elems_per_token(tp) * b * (x.window or 0) for x in spec.layers if x.kind == "sliding"
    )


def sequence_bytes(
    spec: ModelSpec,
    seq_len: int,
    kv_dtype: str | None = None,
    tp: int = 1,
    state_dtype: str | None = None,
) -> float:
    """Bytes one sequence of ``seq_len`` tokens holds, all layers, per GPU.

    Token-exact (no block rounding): full/MLA layers hold every token, sliding
    layers ``min(seq_len, window)``, recurrent layers their fixed state.
    """
    if seq_len < 0:
        raise ConfigError(f"sequence length must be >= 0, got {seq_len}")
    check_tp(spec, tp)
    b = _kv_b(spec, kv_dtype)
    total = sum(x.elems_per_token(tp) * b * x.tokens_held(seq_len) for x in spec.layers)
    return total + state_bytes_per_sequence(spec, tp, state_dtype)


def weights_bytes(spec: ModelSpec, tp: int = 1, weight_dtype: str | None = None) -> float:
    """Weight bytes per GPU: every parameter once, sharded evenly over ``tp`` GPUs.

    ``weight_dtype`` None prices the checkpoint as it ships: the categories of
    ``spec.weight_format`` at :meth:`WeightFormat.bytes_per_param` (MXFP4 4.25 bits;
    FP8 1 byte + a float32 scale per block), the rest in ``spec.dtype``. An explicit
    ``weight_dtype`` (bf16, fp8, int4, ...) prices every parameter in it.
    """
    if tp < 1:
        raise ConfigError(f"tensor parallel size must be >= 1, got {tp}")
    if weight_dtype is not None or spec.weight_format is None:
        return spec.num_params * dtype_bytes(weight_dtype or spec.dtype) / tp
    fmt = spec.weight_format
    quantized = spec.params_in(*fmt.categories)
    rest = spec.num_params - quantized
    return (quantized * fmt.bytes_per_param() + rest * dtype_bytes(spec.dtype)) / tp


def weights_bytes_by_category(
    spec: ModelSpec, tp: int = 1, weight_dtype: str | None = None
) -> dict[str, float]:
    """:func:`weights_bytes` split by ``spec.param_breakdown`` category (per GPU);
    empty for a spec without a breakdown."""
    if tp < 1:
        raise ConfigError(f"tensor parallel size must be >= 1, got {tp}")
    b = dtype_bytes(weight_dtype or spec.dtype)
    fmt = None if weight_dtype is not None else spec.weight_format
    out: dict[str, float] = {}
    for cat, n in spec.param_breakdown:
        per = fmt.bytes_per_param() if fmt is not None and cat in fmt.categories else b
        out[cat] = n * per / tp
    return out


_SHORT_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def weights_format(spec: ModelSpec, weight_dtype: str | None = None) -> str:
    """What :func:`weights_bytes` prices, in words: ``bf16``, ``mxfp4 experts + bf16``,
    ``fp8 linears + bf16``, or the explicit ``weight_dtype``."""
    if weight_dtype is not None:
        return weight_dtype
    base = _SHORT_DTYPES.get(spec.dtype, spec.dtype)
    fmt = spec.weight_format
    if fmt is None or not spec.params_in(*fmt.categories):
        return base
    if fmt.method == "mxfp4":
        what = "experts" if fmt.categories == ("experts",) else "+".join(fmt.categories)
        return f"mxfp4 {what} + {base}"
    return f"fp8 linears + {base}"


def layer_kinds_summary(layers: Iterable[LayerSpec]) -> dict[str, int]:
    """Count of layers per kind, in LAYER_KINDS order, kinds present only."""
    counts: dict[str, int] = {}
    for x in layers:
        counts[x.kind] = counts.get(x.kind, 0) + 1
    return {k: counts[k] for k in LAYER_KINDS if k in counts}


__all__ = [
    "ATTENTION_KINDS",
    "DTYPE_BYTES",
    "KV_DTYPES",
    "LAYER_KINDS",
    "PARAM_CATEGORIES",
    "RECURRENT_KINDS",
    "WEIGHT_QUANT_METHODS",
    "LayerSpec",
    "ModelSpec",
    "WeightFormat",
    "check_tp",
    "dtype_bytes",
    "kv_bytes_per_token",
    "layer_bytes_per_token",
    "layer_kinds_summary",
    "sequence_bytes",
    "sliding_cap_bytes",
    "state_bytes_per_sequence",
    "weights_bytes",
    "weights_bytes_by_category",
    "weights_format",
]
