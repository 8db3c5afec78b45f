"""A workflow's reports are built in memory: their size is bounded before anything runs."""

from __future__ import annotations

import pytest

from kvlab.agents.workflow import MAX_REPORT_WORDS, WorkflowConfig
from kvlab.errors import ConfigError


def test_report_words_are_bounded() -> None:
    WorkflowConfig(pages=1000, page_words=MAX_REPORT_WORDS // 1000)  # at the bound: fine
    with pytest.raises(ConfigError, match="at most 1,000,000 words per report"):
        WorkflowConfig(pages=10**6, page_words=10**6)
