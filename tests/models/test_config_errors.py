"""A config.json that is not a valid model is one ``error:`` line naming the file and the
field (exit 2) in every command that reads one, never a traceback or a silent wrong model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "kvlab" / "data" / "model_configs"
LLAMA = json.loads((CONFIGS / "meta-llama--Meta-Llama-3.1-8B.json").read_text())
MIXTRAL = json.loads((CONFIGS / "mistralai--Mixtral-8x7B-v0.1.json").read_text())
DEEPSEEK = json.loads((CONFIGS / "deepseek-ai--DeepSeek-V3.json").read_text())

Cli = Callable[[list[str]], Any]

# name -> (file content, the field the error must name)
BAD: dict[str, tuple[str | bytes, str]] = {
    "nan-layers": (
        json.dumps(LLAMA).replace('"num_hidden_layers": 32', '"num_hidden_layers": NaN'),
        "num_hidden_layers",
    ),
    "inf-vocab": (
        json.dumps(LLAMA).replace('"vocab_size": 128256', '"vocab_size": Infinity'),
        "vocab_size",
    ),
    "huge-layers": (json.dumps({**LLAMA, "num_hidden_layers": 1e12}), "num_hidden_layers"),
    "huge-intermediate": (json.dumps({**LLAMA, "intermediate_size": 1e300}), "intermediate_size"),
    "binary": (b"\x00\xff\xfe\x00", ""),
    "negative-experts": (json.dumps({**DEEPSEEK, "n_routed_experts": -5}), "n_routed_experts"),
    "negative-local-experts": (
        json.dumps({**MIXTRAL, "num_local_experts": -8}),
        "num_local_experts",
    ),
    "kv-heads-above-heads": (
        json.dumps({**LLAMA, "num_key_value_heads": 64}),
        "num_key_value_heads",
    ),
    "kv-heads-not-dividing": (
        json.dumps({**LLAMA, "num_key_value_heads": 5}),
        "num_key_value_heads",
    ),
    "head-dim-zero": (json.dumps({**LLAMA, "head_dim": 0}), "head_dim"),
    "unknown-dtype": (json.dumps({**LLAMA, "torch_dtype": "float99"}), "torch_dtype"),
    "string-layers": (json.dumps({**LLAMA, "num_hidden_layers": "32"}), "num_hidden_layers"),
    "layer-types-number": (json.dumps({**LLAMA, "layer_types": 3}), "layer_types"),
    "mlp-only-number": (json.dumps({**MIXTRAL, "mlp_only_layers": 3}), "mlp_only_layers"),
    "q-lora-string": (json.dumps({**DEEPSEEK, "q_lora_rank": "big"}), "q_lora_rank"),
    "sliding-window-nan": (
        json.dumps({**LLAMA, "sliding_window": 1.5}),
        "sliding_window",
    ),
    "not-an-object": (json.dumps([LLAMA]), ""),
    "deep-nesting": ("[" * 100_000 + "]" * 100_000, ""),
    "empty": ("", ""),
}


@pytest.mark.parametrize("command", ["plan", "models-show"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_one_line_naming_file_and_field(
    cli: Cli, tmp_path: Path, case: str, command: str
) -> None:
    content, field = BAD[case]
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    argv = ["plan", "--model", str(path)] if command == "plan" else ["models", "show", str(path)]
    res = cli(argv)
    assert res.code == 2, res.err
    line = res.one_line_error()
    assert str(path) in line
    assert f"'{field}'" in line if field else True


def test_from_hf_config_names_the_file(tmp_path: Path) -> None:
    from kvlab.errors import ConfigError
    from kvlab.models import from_hf_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "num_hidden_layers": -1}))
    with pytest.raises(ConfigError, match=rf"{path}: config field 'num_hidden_layers'"):
        from_hf_config(path)
