"""The exported Prometheus rules pass ``promtool check rules`` and the promtool unit
tests shipped in kvlab/data/monitor/kv_alerts_test.yml (Debian: apt-get install prometheus)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvlab.monitor.alerts import DEFAULT_RULES, Rule, prometheus_rules

DATA = Path(__file__).resolve().parents[2] / "src" / "kvlab" / "data"


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        msg = "promtool not found: apt-get install prometheus (Debian/Ubuntu) to run this test"
        if os.environ.get("CI") or os.environ.get("KVLAB_REQUIRE_LIVE") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return exe


def _run(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_exported_rules_pass_promtool(tmp_path: Path) -> None:
    tool = promtool()
    (tmp_path / "kv_alerts.yml").write_text(prometheus_rules(DEFAULT_RULES))
    shutil.copy(DATA / "monitor" / "kv_alerts_test.yml", tmp_path)
    check = _run(tool, "check", "rules", "kv_alerts.yml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(DEFAULT_RULES)} rules found" in check.stdout
    test = _run(tool, "test", "rules", "kv_alerts_test.yml", cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr


def test_the_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """A percentage-style threshold (never fires on a fraction) fails the shipped tests."""
    tool = promtool()
    wrong = (Rule("KvCacheNearlyFull", "kv_cache_usage_perc", ">", 0.999, for_s=60),)
    text = prometheus_rules(wrong + DEFAULT_RULES[1:])
    (tmp_path / "kv_alerts.yml").write_text(text.replace("> 0.999", "> 90"))
    shutil.copy(DATA / "monitor" / "kv_alerts_test.yml", tmp_path)
    test = _run(tool, "test", "rules", "kv_alerts_test.yml", cwd=tmp_path)
    assert test.returncode != 0 and "KvCacheNearlyFull" in test.stdout + test.stderr
