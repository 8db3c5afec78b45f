"""A chat template for the tiny model that renders tool calls and tool messages.

The tiny model's own template (:data:`kvlab.backends.tiny_model.CHAT_TEMPLATE`) prints
``content`` only, which an assistant message with tool calls may lack. This one
prints every message as ``<|role|>``, its text content (a string or text parts), one
``call NAME ARGUMENTS`` line per tool call, then ``</s>``. Serve the tiny model with
``--chat-template FILE`` (:func:`write_chat_template`) to run the agent workflow on it.
"""

from __future__ import annotations

from pathlib import Path

TOOL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}"
    "{{ '\\ncall ' + call['function']['name'] + ' ' }}{{ call['function']['arguments'] | tojson }}"
    "{% endfor %}{% endif %}"
    "{{ '</s>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def write_chat_template(path: str | Path) -> Path:
    """Write :data:`TOOL_CHAT_TEMPLATE` to ``path`` and return it."""
    p = Path(path)
    p.write_text(TOOL_CHAT_TEMPLATE, encoding="utf-8")
    return p
