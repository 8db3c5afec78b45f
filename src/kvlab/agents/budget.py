"""``ContextBudget``: keep a LangGraph agent's message list under a token budget.

A drop-in node for a graph whose state has ``messages`` reduced by LangGraph's
``add_messages``: put it between the tool node and the model node, and it
returns the updates that compact the list (a replaced message keeps its id; a
dropped one is a ``RemoveMessage``). ``apply(messages)`` gives the compacted list
itself, for graphs that keep a plain list.

Strategies (:data:`STRATEGIES`), applied to ``ToolMessage`` contents only:

``none``
    keep everything (the budget below still applies).
``clip``
    cut every tool output to ``clip_chars`` characters as soon as it arrives.
``extract``
    the model sees a raw tool output once; afterwards it is replaced by a stub, and
    its key facts (``facts(text)``, at most ``clip_chars`` characters) are added to
    notes kept at the end of the system message (accumulated, never overwritten).
    The notes change the first message, so every compaction changes the prompt's
    first tokens: the server's prefix cache misses the whole prompt.
``window``
    the last ``window`` tool outputs stay raw; older ones become ``[cleared]``
    (what LangChain's ``ClearToolUsesEdit`` does).
``cache_aware``
    raw outputs stay until a block boundary (a ``HumanMessage`` after them); then the
    block's tool-call pairs are folded, in their place, into one note with their key
    facts. Between boundaries the list only grows, so every model call finds the
    previous call's whole prompt in the server's prefix cache; notes are appended in
    order and never change again (append-only memory). Inside a block over budget, the
    oldest raw outputs already seen are compacted first (the latest change point).

Invariants of the result: the leading system/human messages are kept; every
``AIMessage`` with tool calls is followed by a ``ToolMessage`` for each call, and no
``ToolMessage`` is left without its call (a pair is dropped whole); when the
budget cannot be met by dropping pairs, the largest tool output is cut.
``count_tokens(messages)`` defaults to LangChain's approximate counter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvlab.errors import ConfigError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

#: The strategies a ContextBudget knows.
STRATEGIES: tuple[str, ...] = ("none", "clip", "extract", "window", "cache_aware")
#: The heading of the notes ``extract`` keeps in the system message.
NOTES_HEADING = "\n\nNotes (key facts of earlier tool results):"
#: Every compacted tool output starts with one of these markers.
MARKERS: tuple[str, ...] = ("[clipped]", "[compacted]", "[cleared]")

_DECIMAL = re.compile(r"\d\.\d")

TokenCounter = Callable[[Sequence["BaseMessage"]], int]


def key_lines(text: str, max_chars: int) -> str:
    """Deterministic key facts of a tool output: its distinct lines that carry a decimal
    figure (headings excepted), in order, up to ``max_chars`` characters; the head of the
    text when no line does."""
    seen: set[str] = set()
    out: list[str] = []
    size = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line in seen or not _DECIMAL.search(line):
            continue
        if size + len(line) + 1 > max_chars:
            break
        seen.add(line)
        out.append(line)
        size += len(line) + 1
    return "\n".join(out) if out else text[:max_chars]


@dataclass(frozen=True)
class ContextBudget:
    """Keep a message list under ``max_tokens`` with ``strategy`` (see the module docstring).

    ``cache_aware=True`` turns ``extract`` into ``cache_aware``."""

    max_tokens: int
    strategy: str = "cache_aware"
    clip_chars: int = 1200
    window: int = 2
    cache_aware: bool = False
    count_tokens: TokenCounter | None = None
    low_water: float = 0.6
    facts: Callable[[str, int], str] = key_lines

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if self.max_tokens < 1 or self.clip_chars < 1 or self.window < 0:
            raise ConfigError("ContextBudget: max_tokens and clip_chars must be >= 1, window >= 0")
        if not 0 < self.low_water <= 1:
            raise ConfigError(f"ContextBudget: low_water must be in (0, 1], got {self.low_water}")

    @property
    def effective_strategy(self) -> str:
        return "cache_aware" if self.cache_aware and self.strategy == "extract" else self.strategy

    def __call__(self, state: dict[str, Any]) -> dict[str, list[Any]]:
        """The LangGraph node: updates for ``state["messages"]`` (add_messages reducer)."""
        return {"messages": self.updates(state["messages"])}

    def tokens(self, messages: Sequence[BaseMessage]) -> int:
        if self.count_tokens is not None:
            return int(self.count_tokens(messages))
        from langchain_core.messages.utils import count_tokens_approximately

        return int(count_tokens_approximately(messages))

    def updates(self, messages: Sequence[BaseMessage]) -> list[Any]:
        """Replacements (same id, new content) and ``RemoveMessage``s that turn
        ``messages`` into :meth:`apply`'s result; when the result holds a new message
        (a ``cache_aware`` note), ``REMOVE_ALL_MESSAGES`` and the whole result, as
        add_messages can only append new ids. Every message needs an id."""
        from langchain_core.messages import RemoveMessage

        if any(m.id is None for m in messages):
            raise ConfigError(
                "ContextBudget.updates needs message ids (use the add_messages reducer)"
            )
        kept = self.apply(messages)
        old_ids = {m.id for m in messages}
        if any(m.id not in old_ids for m in kept):
            from langgraph.graph.message import REMOVE_ALL_MESSAGES

            return [RemoveMessage(id=REMOVE_ALL_MESSAGES), *kept]
        kept_by_id = {m.id: m for m in kept}
        out: list[Any] = []
        for m in messages:
            new = kept_by_id.get(m.id)
            if new is None:
                out.append(RemoveMessage(id=str(m.id)))
            elif new.content != m.content:
                out.append(new)
        return out

    def apply(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """The compacted list (input unchanged; replaced messages are copies)."""
        msgs = list(messages)
        strategy = self.effective_strategy
        tool_idx = [i for i, m in enumerate(msgs) if m.type == "tool"]
        raw = [i for i in tool_idx if not _compacted(msgs[i])]
        if strategy == "clip":
            for i in raw:
                msgs[i] = self._clip(msgs[i])
        elif strategy == "extract":
            notes = []
            for i in raw:
                if _answered_after(msgs, i):
                    notes.append(self.facts(str(msgs[i].content), self.clip_chars))
                    msgs[i] = _with_content(msgs[i], f"{MARKERS[1]} facts moved to the notes")
            if notes and msgs and msgs[0].type == "system":
                head = str(msgs[0].content)
                if NOTES_HEADING not in head:
                    head += NOTES_HEADING
                msgs[0] = _with_content(msgs[0], head + "".join(f"\n- {n}" for n in notes))
        elif strategy == "window":
            for i in tool_idx[: max(0, len(tool_idx) - self.window)]:
                if msgs[i].content != "[cleared]":
                    msgs[i] = _with_content(msgs[i], "[cleared]")
        elif strategy == "cache_aware":
            msgs = self._fold_blocks(msgs)
        return self._enforce(msgs)

    def _fold_blocks(self, msgs: list[BaseMessage]) -> list[BaseMessage]:
        """``cache_aware`` at a block boundary: the tool-call pairs before the last
        HumanMessage that are not folded yet become one note (an AIMessage holding their
        key facts, distinct lines) in their place. Messages before the block are untouched,
        so the prefix the server cached up to the block stays byte-identical."""
        from langchain_core.messages import AIMessage

        last_human = max((i for i, m in enumerate(msgs) if m.type == "human"), default=-1)
        block = [
            i
            for i, m in enumerate(msgs[:last_human])
            if (m.type == "tool" or (m.type == "ai" and _call_ids(m)))
        ]
        if not block:
            return msgs
        lines: list[str] = []
        for i in block:
            if msgs[i].type == "tool":
                for line in self.facts(str(msgs[i].content), self.clip_chars).splitlines():
                    if line not in lines:
                        lines.append(line)
        first = block[0]
        note = AIMessage(
            content=f"{MARKERS[1]} notes:\n" + "\n".join(lines),
            id=f"note-{msgs[first].id}",
        )
        drop = set(block)
        return [
            note if i == first else m for i, m in enumerate(msgs) if i == first or i not in drop
        ]

    def _clip(self, m: BaseMessage) -> BaseMessage:
        text = str(m.content)
        if len(text) <= self.clip_chars:
            return m
        return _with_content(m, f"[clipped] {text[: self.clip_chars]}")

    def _extract(self, m: BaseMessage) -> BaseMessage:
        return _with_content(
            m, f"[compacted] key facts:\n{self.facts(str(m.content), self.clip_chars)}"
        )

    def _enforce(self, msgs: list[BaseMessage]) -> list[BaseMessage]:
        """Make the list fit ``max_tokens``. ``cache_aware`` first compacts the oldest raw
        tool outputs the model has already seen (the latest change point there is); then
        every strategy drops the oldest whole tool-call pairs (``cache_aware``: down to
        ``low_water`` of the budget, so that the prefix breaks rarely); last, the largest
        tool output is cut."""
        if self.tokens(msgs) <= self.max_tokens:
            return msgs
        if self.effective_strategy == "cache_aware":
            for i, m in enumerate(msgs):
                if m.type == "tool" and not _compacted(m) and _answered_after(msgs, i):
                    msgs[i] = self._extract(m)
                    if self.tokens(msgs) <= self.max_tokens:
                        return msgs
            target = int(self.max_tokens * self.low_water)
        else:
            target = self.max_tokens
        while self.tokens(msgs) > target:
            pair = _oldest_pair(msgs)
            if pair is None:
                break
            msgs = [m for i, m in enumerate(msgs) if i not in pair]
        while self.tokens(msgs) > self.max_tokens:
            tools = [i for i, m in enumerate(msgs) if m.type == "tool" and len(str(m.content)) > 64]
            if not tools:
                break
            big = max(tools, key=lambda i: len(str(msgs[i].content)))
            text = str(msgs[big].content)
            msgs[big] = _with_content(msgs[big], f"[clipped] {text[: len(text) // 2]}")
        return msgs


def _compacted(m: BaseMessage) -> bool:
    return isinstance(m.content, str) and m.content.startswith(MARKERS)


def _answered_after(msgs: list[BaseMessage], i: int) -> bool:
    """True when a model answer (an AIMessage) follows message ``i``."""
    return any(m.type == "ai" for m in msgs[i + 1 :])


def _with_content(m: BaseMessage, content: str) -> BaseMessage:
    return m.model_copy(update={"content": content})


def _oldest_pair(msgs: list[BaseMessage]) -> set[int] | None:
    """Indices of the oldest AIMessage with tool calls, its ToolMessages, and nothing else,
    unless it is the last such AIMessage (the current step keeps its pair)."""
    calls = [i for i, m in enumerate(msgs) if m.type == "ai" and _call_ids(m)]
    if len(calls) < 2:
        return None
    i = calls[0]
    ids = _call_ids(msgs[i])
    return {i} | {
        j
        for j, m in enumerate(msgs)
        if m.type == "tool" and getattr(m, "tool_call_id", None) in ids
    }


def _call_ids(m: BaseMessage) -> set[str]:
    """Ids of an AIMessage's tool calls, those with arguments that are not JSON included
    (``invalid_tool_calls``: they are sent as tool calls and answered too)."""
    calls = [
        *(getattr(m, "tool_calls", None) or []),
        *(getattr(m, "invalid_tool_calls", None) or []),
    ]
    return {str(tc["id"]) for tc in calls if tc.get("id")}
