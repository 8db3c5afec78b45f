"""The monitor loop: every interval, scrape each server (in parallel), evaluate
the alert rules, record, and hand the views to whoever draws them.

:class:`Monitor` owns one :class:`ServerView` per URL; :meth:`Monitor.tick` is
one round and returns the alert events it caused. The loop's timing is wall
time (this is the one place in kvlab that watches the wall clock on purpose).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from kvlab.monitor.alerts import AlertEvent, AlertState, Rule
from kvlab.monitor.sampler import Sample, ServerWatch

#: Samples of KV usage kept for the sparkline.
HISTORY = 60


class ServerView:
    """One server as the dashboard shows it: the watch, its alerts, the last
    sample and the last good one, and the KV usage of the last samples."""

    def __init__(self, url: str, rules: Sequence[Rule], timeout_s: float) -> None:
        self.watch = ServerWatch(url, timeout_s=timeout_s)
        self.url = self.watch.url
        self.alerts = AlertState(rules)
        self.last: Sample | None = None
        self.last_good: Sample | None = None
        self.usage_history: deque[float | None] = deque(maxlen=HISTORY)
        self.reset_seen_unix: float | None = None
        self.last_events: deque[AlertEvent] = deque(maxlen=4)

    def fold(self, s: Sample) -> list[AlertEvent]:
        self.last = s
        if s.up:
            self.last_good = s
            if s.counter_reset:
                self.reset_seen_unix = s.t_unix
        self.usage_history.append(s.kv_cache_usage_perc if s.up else None)
        events = self.alerts.evaluate(s)
        self.last_events.extend(events)
        return events

    def alert_rows(self) -> list[tuple[str, str]]:
        rows = [
            ("alert", f"FIRING {name} since {time.strftime('%H:%M:%S', time.localtime(t))}")
            for name, t in self.alerts.firing.items()
        ]
        for e in self.last_events:
            if e.event == "resolved":
                rows.append(
                    (
                        "resolved",
                        f"{e.rule} at {time.strftime('%H:%M:%S', time.localtime(e.t_unix))}",
                    )
                )
        if not rows:
            rows.append(("alerts", "none"))
        return rows


class Monitor:
    """Watch ``urls``; ``record``: a JSONL file that gets every sample and event."""

    def __init__(
        self,
        urls: Sequence[str],
        rules: Sequence[Rule],
        *,
        timeout_s: float = 2.0,
        record: Path | None = None,
    ) -> None:
        self.views = [ServerView(u, rules, timeout_s) for u in urls]
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.views)))
        self._record: IO[str] | None = None
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            self._record = record.open("a", encoding="utf-8")

    def scrape_all(self) -> list[Sample]:
        now = time.time()
        futures = [self._pool.submit(v.watch.scrape, now) for v in self.views]
        return [f.result() for f in futures]

    def tick(self) -> tuple[list[Sample], list[AlertEvent]]:
        """One round: scrape, fold, record; the samples and the events it caused."""
        samples = self.scrape_all()
        events: list[AlertEvent] = []
        for v, s in zip(self.views, samples, strict=True):
            events += v.fold(s)
        if self._record is not None:
            for s in samples:
                self._write({"type": "sample", **s.to_dict()})
            for e in events:
                self._write(e.to_dict())
            self._record.flush()
        return samples, events

    def _write(self, obj: dict[str, Any]) -> None:
        assert self._record is not None
        self._record.write(json.dumps(obj, default=str) + "\n")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._record is not None:
            self._record.close()
            self._record = None


__all__ = ["HISTORY", "Monitor", "ServerView"]
