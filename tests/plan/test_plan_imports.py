"""``kvlab.plan`` and ``kvlab plan`` import only what they use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: Loaded by neither the planning library nor ``kvlab plan --json``.
NOT_FOR_PLAN = ["numpy", "rich", "kvlab.results", "kvlab.sim", "kvlab.workload"]


def _loaded_after(code: str) -> list[str]:
    """Module names loaded by a fresh interpreter running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout.splitlines()[-1]))


def _has(mods: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in mods)


def test_import_plan_loads_no_catalog_parsers_or_results() -> None:
    mods = _loaded_after("import kvlab.plan")
    for name in [*NOT_FOR_PLAN, "kvlab.models.catalog", "kvlab.models.hf", "kvlab.models.summary"]:
        assert not _has(mods, name), name
    assert "kvlab.plan.capacity" in mods and "kvlab.models.spec" in mods


def test_spec_does_not_import_the_parsers() -> None:
    mods = _loaded_after("import kvlab.models.spec")
    assert not _has(mods, "kvlab.models.hf") and not _has(mods, "kvlab.models.catalog")


def test_plan_command_json_loads_neither_rich_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from kvlab.cli.app import main\n"
        "try:\n"
        "    main(['plan', '--model', 'llama-3.1-8b', '--gpu', 'h100-sxm', '--json'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
    )
    mods = _loaded_after(code)
    for name in NOT_FOR_PLAN:
        assert not _has(mods, name), name
