"""Hugging Face ``config.json`` -> :class:`~kvlab.models.spec.ModelSpec`, without transformers.

One module per model family, each registering its parser for the ``model_type`` values
it reads (:mod:`~kvlab.models.hf.registry`, a dict as vLLM's model registry is); each
returns the per-layer memory shape (which layers are full attention, sliding window,
MLA, Mamba or linear attention) and the parameter counts, both derived from the config
alone. The parsers depend on :mod:`kvlab.models.spec`, never the other way round
(``ModelSpec.from_hf_config`` imports this package when called); the catalog uses it.

Layer-kind rules follow vLLM 0.32 (``vllm/config/model.py``, ``engine/arg_utils.py`` and
the model files): a config's ``layer_types`` wins; without it a non-null, non-zero
``sliding_window`` makes *every* layer sliding (Mistral-7B-v0.1: 4096; Phi-3-mini-4k:
2047), unless ``use_sliding_window`` is false (Qwen2/Qwen3, where transformers drops
the window). Gemma-2 / Gemma-3 / gpt-oss without ``layer_types`` use their fixed
alternation (transformers' config classes).

Modules: ``config`` (loading, typed fields, serving dtype), ``layers`` (sliding-window
rules), ``params`` (parameter counting), ``weight_format`` (``quantization_config``),
``registry``, ``parse`` (:func:`from_hf_config`), ``decoder`` (the Llama-style decoder
several families share), and the families: ``llama``, ``qwen``, ``gemma``, ``gpt_oss``,
``deepseek``, ``qwen3_next``, ``nemotron_h``, ``jamba``, ``phi``, ``opt``.
"""

from kvlab.models.hf.config import load_config
from kvlab.models.hf.parse import SUPPORTED_MODEL_TYPES, from_hf_config

__all__ = ["SUPPORTED_MODEL_TYPES", "from_hf_config", "load_config"]
