"""Turn splitting: a decoded ``tool_agent`` rollout -> its assistant turns and the observations after each.

Linear in the length of the text (``str.find`` and fixed-length checks), whatever the policy writes.
"""

from __future__ import annotations

import re

from toolrm_rl.core.parse import strip_thinking

__all__ = ["clean_turn", "split_turns"]

# One observation section of a decoded tool_agent rollout: optional end/start markers and role label,
# one or more <tool_response> blocks, then the next assistant header. With skip_special_tokens=True the
# Qwen3 template leaves "...</tool_call>\nuser\n<tool_response>\n...\n</tool_response>\nassistant\n".
# Found with str.find and fixed-length checks, not a regex: a pattern with optional parts between
# whitespace runs backtracks cubically on a long run of blanks (9 s for 1,000 newlines).
_RESPONSE_OPEN, _RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_ROLES_BEFORE = ("user", "tool")
_ASSISTANT_HEADER = "assistant\n"
_MARKERS_RE = re.compile(r"<\|im_(?:start|end)\|>|<\|endoftext\|>")


def _skip_space(text: str, i: int) -> int:
    """The first index >= i that is not whitespace."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return i


def _skip_space_back(text: str, i: int, lo: int) -> int:
    """The smallest j in [lo, i] with text[j:i] all whitespace."""
    while i > lo and text[i - 1].isspace():
        i -= 1
    return i


def _ends_with(text: str, token: str, i: int, lo: int) -> bool:
    return i - len(token) >= lo and text.startswith(token, i - len(token))


def _observation_start(text: str, i: int, lo: int) -> int:
    """Where the observation header ``[<|im_end|>] ws [<|im_start|>] [user|tool] ws`` before the
    ``<tool_response>`` at ``i`` begins (not before ``lo``, the end of the previous section)."""
    j = _skip_space_back(text, i, lo)
    for role in _ROLES_BEFORE:
        if _ends_with(text, role, j, lo):
            j -= len(role)
            break
    if _ends_with(text, _IM_START, j, lo):
        j -= len(_IM_START)
    j = _skip_space_back(text, j, lo)
    if _ends_with(text, _IM_END, j, lo):
        j -= len(_IM_END)
    return j


def split_turns(text: str) -> list[tuple[str, list[str]]]:
    """Split a decoded rollout into ``(assistant_text, observations_after_it)`` turns; linear in ``len(text)``.

    An observation section is ``[<|im_end|>] [<|im_start|>] [user|tool]``, one or more
    ``<tool_response>...</tool_response>`` blocks (the last may be unclosed: it runs to the end), then
    ``[<|im_end|>] [<|im_start|>] [assistant\\n]``, with any whitespace between the parts.

    >>> split_turns('<tool_call>{"name": "f", "arguments": {}}</tool_call>\\nuser\\n<tool_response>\\n42\\n'
    ...             '</tool_response>\\nassistant\\nIt is 42.')
    [('<tool_call>{"name": "f", "arguments": {}}</tool_call>', ['42']), ('It is 42.', [])]
    """
    turns: list[tuple[str, list[str]]] = []
    n, pos = len(text), 0
    while (i := text.find(_RESPONSE_OPEN, pos)) >= 0:
        start = _observation_start(text, i, pos)
        observations: list[str] = []
        j = i
        while text.startswith(_RESPONSE_OPEN, j):
            body = j + len(_RESPONSE_OPEN)
            close = text.find(_RESPONSE_CLOSE, body)
            if close < 0:  # an unclosed block runs to the end of the text
                observations.append(text[body:].strip())
                j = n
                break
            observations.append(text[body:close].strip())
            j = _skip_space(text, close + len(_RESPONSE_CLOSE))
        if text.startswith(_IM_END, j):
            j = _skip_space(text, j + len(_IM_END))
        if text.startswith(_IM_START, j):
            j += len(_IM_START)
        if text.startswith(_ASSISTANT_HEADER, j):
            j += len(_ASSISTANT_HEADER)
        turns.append((clean_turn(text[pos:start]), observations))
        pos = j
    last = clean_turn(text[pos:])
    if last or not turns:
        turns.append((last, []))
    return turns


def clean_turn(text: str) -> str:
    """One turn's text without chat-template markers and thinking, stripped."""
    text = _MARKERS_RE.sub("", text)
    return (strip_thinking(text) if "think>" in text else text).strip()

