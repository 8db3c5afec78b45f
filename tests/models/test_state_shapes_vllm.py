"""Recurrent-state sizes against vLLM's own MambaStateShapeCalculator (in vLLM's venv).

Runs a small script with the Python named by KVLAB_VLLM_PYTHON; skipped when it is not
set, unless KVLAB_REQUIRE_LIVE=1.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from kvlab.models import get_model

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SCRIPT = r"""
import json, sys
from vllm.model_executor.layers.mamba.mamba_utils import MambaStateShapeCalculator as C
out = []
for q in json.loads(sys.stdin.read()):
    kind, tp, a = q["kind"], q["tp"], q["args"]
    if kind == "mamba2":
        shapes = C.mamba2_state_shape(tp, a["d_inner"], a["n_groups"], a["n_heads"],
                                      a["head_dim"], a["d_state"], a["d_conv"])
    elif kind == "mamba1":
        shapes = C.mamba1_state_shape(tp, a["d_inner"], a["d_state"], a["d_conv"])
    else:
        shapes = C.gated_delta_net_state_shape(tp, a["k_heads"], a["v_heads"], a["k_dim"],
                                               a["v_dim"], a["d_conv"])
    out.append([list(s) for s in shapes])
print(json.dumps(out))
"""

# (alias, kind, shape arguments as the config gives them)
CASES = [
    (
        "nemotron-h-8b",
        "mamba2",
        {"d_inner": 8192, "n_groups": 8, "n_heads": 128, "head_dim": 64, "d_state": 128,
         "d_conv": 4},
    ),
    ("jamba-v0.1", "mamba1", {"d_inner": 8192, "d_state": 16, "d_conv": 4}),
    (
        "qwen3-next-80b-a3b",
        "linear",
        {"k_heads": 16, "v_heads": 32, "k_dim": 128, "v_dim": 128, "d_conv": 4},
    ),
]  # fmt: skip
TPS = [1, 2, 4, 8]


def test_state_elems_match_vllm(vllm_python: str) -> None:
    queries = [{"kind": k, "tp": tp, "args": a} for _, k, a in CASES for tp in TPS]
    res = subprocess.run(
        [vllm_python, "-c", SCRIPT],
        input=json.dumps(queries),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    shapes = iter(json.loads(res.stdout.strip().splitlines()[-1]))
    for alias, kind, _ in CASES:
        layer = next(x for x in get_model(alias).layers if x.kind == kind)
        for tp in TPS:
            conv, ssm = next(shapes)
            assert layer.conv_elems_per_gpu(tp) == math.prod(conv), (alias, tp)
            assert layer.ssm_elems_per_gpu(tp) == math.prod(ssm), (alias, tp)
