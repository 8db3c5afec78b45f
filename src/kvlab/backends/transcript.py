"""Sessions replayed with the server's own answers, and the transcript of what was sent.

``kvlab replay --history server`` sends each session's next turn with the answers the
server actually produced, as a chat client does, instead of the scripted answers of
the workload file (``--history scripted``, the default). A turn's prompt is its
workload segments, in order, where every segment that names an earlier turn's
``output_content`` id of the same session is replaced by that turn's answer text, whole
(:meth:`SessionHistory.prompt`). The next turn is therefore sent only after the
previous one finished; a turn that failed has no answer, so it ends its session (the
later turns are recorded not sent).

The transcript (:class:`Transcript`) is a kvlab workload of what was sent: each
request's ``output_tokens`` is the completion the server reported, its
``output_content`` names that answer (``served/<request id>/answer``), and its
segments say, at the token level the simulator needs, which tokens the prompt shares
with what came before:

* When the server returns token ids (vLLM's ``return_token_ids``, asked for on every
  request of such a run), a turn's prompt ids are compared with the prompt plus the
  generated ids of each earlier turn of its session; with ``L`` the longest common
  prefix, the transcript prompt is the first ``L`` tokens of that turn's transcript
  (its segments, then its answer; content is prefix-closed, so a cut segment is the
  same tokens) followed by ``served/<request id>/prompt``, new content, for the rest.
  This is exact whatever the tokenizer does at the seams (an answer whose text
  tokenizes back to other tokens shares only the tokens that are equal).
* Otherwise (the first turn of a session, or a server without token ids) the
  transcript prompt is the workload's segments with each re-sent answer replaced by
  the answer's content id and its completion token count. That is exact when the
  text of a segment is as many tokens on the server as the file says (the tiny
  model's tokenizer) and an answer's text tokenizes back to the tokens generated.
  When the server's prompt count differs from the transcript's, the request is
  counted in :attr:`Transcript.count_mismatches`.

Timing: a session's first sent turn (and a request outside any session) arrives at the
second it was sent; a later turn has ``think_time_s`` = the gap between the previous
answer's last byte and its own send. ``kvlab simulate RUN/transcript.jsonl`` replays it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kvlab.results import RequestRecord
from kvlab.workload.records import Request, Segment, Workload

#: Where a session's next turn gets its history: the workload file, or the server's answers.
HISTORIES: tuple[str, ...] = ("scripted", "server")

#: The file the transcript is written to in a run directory.
TRANSCRIPT_FILE = "transcript.jsonl"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server answered to one turn: its text, the completion token count
    (the server's usage, else the content chunks), the prompt token count of the
    server's usage (None when not reported) and, when the server returned them, the
    prompt's and the answer's token ids."""

    text: str
    tokens: int
    prompt_tokens: int | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    token_ids: tuple[int, ...] | None = None


@dataclass(slots=True)
class _Turn:
    """One sent turn as the transcript holds it: its prompt segments followed by its
    answer segment, and the server's ids of the same tokens when known."""

    segments: tuple[Segment, ...]
    ids: tuple[int, ...] | None
    finish_s: float


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """The length of the longest common prefix of two token id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def first_tokens(segments: tuple[Segment, ...], n: int) -> tuple[Segment, ...]:
    """The segments of the first ``n`` tokens of ``segments`` (the last one cut)."""
    out: list[Segment] = []
    left = n
    for s in segments:
        if left <= 0:
            break
        take = min(s.tokens, left)
        if take > 0:
            out.append(s if take == s.tokens else Segment(s.kind, take, s.content_id, s.retention))
        left -= take
    return tuple(out)


@dataclass(slots=True)
class SessionHistory:
    """One session's answers so far (by the workload's ``output_content`` id) and its
    sent turns as the transcript records them."""

    answers: dict[str, Answer] = field(default_factory=dict)
    answer_ids: dict[str, str] = field(default_factory=dict)
    turns: list[_Turn] = field(default_factory=list)

    def prompt(self, req: Request, seg_text: Callable[[str, int], str], prefix: str = "") -> str:
        """``req``'s prompt text: its segments' texts, each earlier answer it names
        replaced by the text the server produced."""
        parts = [prefix]
        for s in req.segments:
            a = self.answers.get(s.content_id)
            parts.append(a.text if a is not None else seg_text(s.content_id, s.tokens))
        return "".join(parts)

    def add(self, req: Request, rec: RequestRecord, answer: Answer) -> tuple[Request, bool]:
        """Record the finished turn ``req`` (its record ``rec``, the server's ``answer``);
        returns its transcript request and whether its prompt count differs from the
        server's."""
        out_id = f"served/{req.request_id}/answer"
        segments = self._segments(req, answer)
        prompt_tokens = sum(s.tokens for s in segments)
        server_prompt = (
            len(answer.prompt_token_ids)
            if answer.prompt_token_ids is not None
            else answer.prompt_tokens
        )
        mismatch = server_prompt is not None and server_prompt != prompt_tokens
        sent_s = rec.sent_s if rec.sent_s is not None else rec.arrival_s
        first = not self.turns
        arrival = sent_s if first or req.session_id is None else None
        think = None if arrival is not None else max(0.0, sent_s - self.turns[-1].finish_s)
        out = Request(
            request_id=req.request_id,
            segments=segments,
            output_tokens=max(1, answer.tokens),
            arrival_s=arrival,
            think_time_s=think,
            session_id=req.session_id,
            turn=req.turn,
            priority=req.priority,
            cls=req.cls,
            output_content_id=out_id,
        )
        ids = None
        if answer.prompt_token_ids is not None and answer.token_ids is not None:
            ids = answer.prompt_token_ids + answer.token_ids
        whole = (*segments, Segment("assistant", answer.tokens, out_id, "generation"))
        self.turns.append(_Turn(whole, ids, rec.finish_s if rec.finish_s is not None else sent_s))
        if req.output_content_id is not None:
            self.answers[req.output_content_id] = answer
            self.answer_ids[req.output_content_id] = out_id
        return out, mismatch

    def _segments(self, req: Request, answer: Answer) -> tuple[Segment, ...]:
        ids = answer.prompt_token_ids
        if ids is not None:
            best, base = 0, None
            for t in self.turns:
                if t.ids is not None:
                    n = common_prefix(ids, t.ids)
                    if n > best:
                        best, base = n, t
            if base is not None:
                head = first_tokens(base.segments, best)
                rest = len(ids) - best
                if rest == 0:
                    return head
                tail = Segment("user", rest, f"served/{req.request_id}/prompt", "context")
                return (*head, tail)
        out: list[Segment] = []
        for s in req.segments:
            a = self.answers.get(s.content_id)
            if a is None:
                out.append(s)
            elif a.tokens > 0:
                out.append(Segment(s.kind, a.tokens, self.answer_ids[s.content_id], s.retention))
        return tuple(out)


class Transcript:
    """The transcript of one run: every turn sent with a complete answer, as a workload."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions: dict[str, SessionHistory] = {}
        self.requests: list[Request] = []
        self.count_mismatches = 0
        self.token_ids_known = 0

    def session(self, req: Request) -> SessionHistory:
        """The history of ``req``'s session (a request outside any session has its own)."""
        key = req.session_id if req.session_id is not None else f"\0{req.request_id}"
        h = self.sessions.get(key)
        if h is None:
            h = self.sessions[key] = SessionHistory()
        return h

    def add(self, req: Request, rec: RequestRecord, answer: Answer) -> None:
        """Record the finished turn ``req`` (see :meth:`SessionHistory.add`)."""
        out, mismatch = self.session(req).add(req, rec, answer)
        self.requests.append(out)
        self.count_mismatches += mismatch
        self.token_ids_known += answer.prompt_token_ids is not None

    def workload(self) -> Workload:
        """The transcript as a workload, in run order (sessions by their first send)."""
        from kvlab.workload.io import check_order

        reqs = check_order(enumerate(self.requests, start=1), sort=True)
        return Workload(
            reqs,
            name=f"{self.name} (transcript)",
            meta={
                "description": "what kvlab replay --history server sent: the server's own "
                "answers re-sent in each session's next turn"
            },
        )

    def summary(self) -> dict[str, object]:
        """Figures for the run's summary: requests, how many had the server's token ids,
        how many prompts the server counted differently."""
        return {
            "file": TRANSCRIPT_FILE,
            "requests": len(self.requests),
            "with_server_token_ids": self.token_ids_known,
            "prompt_count_mismatches": self.count_mismatches,
        }


__all__ = [
    "HISTORIES",
    "TRANSCRIPT_FILE",
    "Answer",
    "SessionHistory",
    "Transcript",
    "common_prefix",
    "first_tokens",
]
