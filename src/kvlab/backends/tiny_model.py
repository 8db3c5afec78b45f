"""A tiny random-weight Llama-style model with a BPE tokenizer, built locally in seconds.

Used by tests, docs and demos wherever a real model directory is needed (the
transformers backend, a vLLM server on CPU) but nothing may be downloaded. The
tokenizer is a byte-level BPE trained on the text shipped in
``kvlab/data/tiny_corpus.txt`` plus, when present, the words of
``kvlab.workload.content.VOCABULARY`` (each becomes one token with its leading
space). The weights are random (seeded), so generated text is noise; token
counts, KV bytes and timings are what matter.

The directory written is a standard transformers model directory:
``config.json``, ``generation_config.json``, ``model.safetensors``,
``tokenizer.json`` and ``tokenizer_config.json`` (with a small chat template).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from kvlab.errors import ConfigError, DependencyMissing

T = TypeVar("T")

#: Special tokens, in id order (ids 0..5).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<s>",
    "</s>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
)
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = SPECIAL_TOKENS[:3]

#: A minimal chat template: one role tag line, the content, then the EOS token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

#: How often each vocabulary word is repeated in the training text, so that
#: BPE merges it into one token before it runs out of vocabulary.
_VOCAB_REPEATS = 16


@dataclass(frozen=True, slots=True)
class TinyModelConfig:
    """Shape of the tiny model. ``hidden`` must divide by ``heads`` and ``heads``
    by ``kv_heads``; head_dim = hidden / heads (vLLM's CPU attention needs a
    multiple of 16 from 32 upwards)."""

    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    vocab: int = 2048
    max_pos: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "kv_heads", "vocab", "max_pos"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tiny model: {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError(f"tiny model: hidden {self.hidden} must divide by heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ConfigError(
                f"tiny model: heads {self.heads} must divide by kv_heads {self.kv_heads}"
            )
        if self.vocab < 512:
            raise ConfigError(f"tiny model: vocab must be >= 512, got {self.vocab}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


def corpus_text() -> str:
    """The original English text the tokenizer is trained on (shipped with kvlab)."""
    return resources.files("kvlab.data").joinpath("tiny_corpus.txt").read_text(encoding="utf-8")


def vocabulary_words() -> tuple[str, ...]:
    """Words of ``kvlab.workload.content.VOCABULARY`` when that module provides them."""
    import importlib

    try:
        content = importlib.import_module("kvlab.workload.content")
    except ImportError:
        return ()
    words = getattr(content, "VOCABULARY", ())
    return tuple(str(w) for w in words)


def train_tokenizer(vocab: int, words: Sequence[str] = ()) -> Any:
    """Train the byte-level BPE ``tokenizers.Tokenizer`` of exactly ``vocab`` entries.

    ``words`` are repeated in the training text so each ``" " + word`` ends up a
    single token; the corpus fills the rest of the vocabulary.
    """
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise DependencyMissing("tokenizers", "hf") from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = corpus_text().splitlines()
    if words:
        line = "".join(" " + w for w in words)
        lines = [line] * _VOCAB_REPEATS + lines
    tok.train_from_iterator(lines, trainer)
    return tok


def tokenizer_config(max_pos: int) -> dict[str, Any]:
    """tokenizer_config.json contents (no BOS added: token counts are what was sent)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_pos,
        "chat_template": CHAT_TEMPLATE,
    }


def llama_config_dict(cfg: TinyModelConfig) -> dict[str, Any]:
    """The ``LlamaConfig`` keyword arguments of the tiny model."""
    return {
        "vocab_size": cfg.vocab,
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_pos,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "pad_token_id": SPECIAL_TOKENS.index(PAD_TOKEN),
        "bos_token_id": SPECIAL_TOKENS.index(BOS_TOKEN),
        "eos_token_id": SPECIAL_TOKENS.index(EOS_TOKEN),
    }


def write_tiny_model(out_dir: str | Path, cfg: TinyModelConfig | None = None) -> Path:
    """Write the tiny model directory ``out_dir`` and return its path.

    Deterministic for a given ``cfg`` (weights from ``cfg.seed``; the global
    torch RNG is left untouched).
    """
    cfg = cfg or TinyModelConfig()
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        pkg = "torch" if getattr(e, "name", "") == "torch" else "transformers"
        raise DependencyMissing(pkg, "hf") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = train_tokenizer(cfg.vocab, vocabulary_words())
    if tok.get_vocab_size() != cfg.vocab:
        raise ConfigError(
            f"tiny model: the shipped corpus yields only {tok.get_vocab_size()} BPE tokens; "
            f"choose --vocab <= {tok.get_vocab_size()}"
        )
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(cfg.max_pos), indent=2) + "\n"
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        config = LlamaConfig(**llama_config_dict(cfg), dtype="bfloat16")
        model = LlamaForCausalLM(config)
        model = model.bfloat16()
    model.generation_config.do_sample = False
    quietly(lambda: model.save_pretrained(out))
    (out / "kvlab_tiny.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return out


def quietly(fn: Callable[[], T]) -> T:
    """Run ``fn`` with transformers' progress bars off (restored afterwards)."""
    from transformers.utils import logging as tf_logging

    was_enabled = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        return fn()
    finally:
        if was_enabled:
            tf_logging.enable_progress_bar()


__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TinyModelConfig",
    "corpus_text",
    "llama_config_dict",
    "quietly",
    "tokenizer_config",
    "train_tokenizer",
    "vocabulary_words",
    "write_tiny_model",
]
