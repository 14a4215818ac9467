"""`sentinel capture --agent`: the capture's alert hits and flow windows, sent to the running
agent's `POST /api/traffic` (sentinel.traffic.feed) in batches.

A batch leaves every `interval_s`, sooner when an alert opens (latency) or `batch_items`
windows wait. Each body is packed to fit the agent's body limit. While the agent is
unreachable the capture goes on: batches wait and are retried with a jittered, capped backoff;
beyond `max_pending` alerts (or windows) waiting, the oldest are dropped and counted. A batch
the agent refuses (an HTTP error: its reason is printed) is dropped and counted, not retried.
Delivery is at least once: a batch whose answer was lost is sent again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import typer

from sentinel.asyncutil import wait_event
from sentinel.backoff import Backoff
from sentinel.config import Config
from sentinel.errors import SentinelError
from sentinel.operator_cli import AgentUnreachable, call
from sentinel.traffic.alerts import TrafficAlert
from sentinel.traffic.feed import MAX_BODY_BYTES, MAX_ITEMS, PATH, alert_item, window_item
from sentinel.traffic.flows import FlowFeatures

_ENVELOPE = len(b'{"alerts":[],"features":[]}')


class FeedRefused(Exception):
    """The agent answered the batch with an HTTP error."""


Post = Callable[[dict[str, Any]], object]  # blocking; raises AgentUnreachable or FeedRefused


def agent_post(cfg: Config) -> Post:
    """POST a body to the agent of `cfg` (its [http] listen and token), as the operator's
    commands do."""

    def post(body: dict[str, Any]) -> None:
        try:
            call(cfg, "POST", PATH, body)  # prints why the agent refused, then exits
        except typer.Exit:
            raise FeedRefused from None
        except SentinelError as exc:  # the token file went away
            typer.echo(f"sentinel: {exc}", err=True)
            raise FeedRefused from None

    return post


@dataclass(slots=True)
class FeedStats:
    batches: int = 0  # delivered
    alerts: int = 0  # alert hits delivered (an alert's latest state per batch)
    features: int = 0  # feature windows delivered
    failed: int = 0  # attempts that found no agent (retried)
    refused: int = 0  # batches the agent refused (dropped)
    dropped: int = 0  # items dropped, oldest first, while more than max_pending waited
    oversized: int = 0  # single items larger than a body (never seen in practice)
    unsent: int = 0  # items still waiting when the capture ended

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class AgentFeed:
    def __init__(
        self,
        post: Post,
        *,
        interval_s: float = 0.5,
        batch_items: int = 64,
        max_pending: int = 10_000,
        body_bytes: int = MAX_BODY_BYTES,
        backoff: Backoff | None = None,
    ) -> None:
        self._post = post
        self._interval = interval_s
        self._batch_items = batch_items
        self._max_pending = max_pending
        self._budget = body_bytes - _ENVELOPE
        self._backoff = backoff or Backoff(0.5, 30.0)
        # Alerts hit since they were last sent, by identity: the latest state goes out once.
        self._alerts: dict[int, TrafficAlert] = {}
        self._windows: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self.stats = FeedStats()

    @property
    def pending(self) -> int:
        return len(self._alerts) + len(self._windows)

    # Analyzer callbacks (on the event loop, between frames).

    def on_alert(self, alert: TrafficAlert, opened: bool) -> None:
        self._alerts[id(alert)] = alert  # kept alive here, so its id is not reused
        if len(self._alerts) > self._max_pending:
            del self._alerts[next(iter(self._alerts))]
            self.stats.dropped += 1
        if opened:
            self._wake.set()

    def on_features(self, features: FlowFeatures) -> None:
        item = window_item(features)
        if item is None:
            return
        self._windows.append(item)
        if len(self._windows) > self._max_pending:
            self._windows.popleft()
            self.stats.dropped += 1
        if len(self._windows) >= self._batch_items:
            self._wake.set()

    # Sending.

    def _next_body(self) -> tuple[dict[str, Any], list[TrafficAlert], list[dict[str, Any]]]:
        """Take the oldest waiting items that fit in one body."""
        size = 0
        alerts: list[TrafficAlert] = []
        windows: list[dict[str, Any]] = []
        body: dict[str, list[dict[str, Any]]] = {"alerts": [], "features": []}
        for key in list(self._alerts):
            alert = self._alerts[key]
            item = alert_item(alert)
            n = len(orjson.dumps(item)) + 1
            if n > self._budget:
                del self._alerts[key]
                self.stats.oversized += 1
                continue
            if size + n > self._budget or len(alerts) >= MAX_ITEMS:
                break
            del self._alerts[key]
            alerts.append(alert)
            body["alerts"].append(item)
            size += n
        while self._windows and len(windows) < MAX_ITEMS:
            n = len(orjson.dumps(self._windows[0])) + 1
            if n > self._budget:
                self._windows.popleft()
                self.stats.oversized += 1
                continue
            if size + n > self._budget:
                break
            windows.append(self._windows.popleft())
            body["features"].append(windows[-1])
            size += n
        return body, alerts, windows

    def _put_back(self, alerts: list[TrafficAlert], windows: list[dict[str, Any]]) -> None:
        # In front, as the oldest; an alert hit meanwhile keeps its newer entry's place.
        self._alerts = {**{id(a): a for a in alerts}, **self._alerts}
        self._windows.extendleft(reversed(windows))

    async def send_pending(self) -> bool:
        """Send what waits, body after body; False when the agent was unreachable or refused
        a batch (the caller backs off)."""
        while self._alerts or self._windows:
            body, alerts, windows = self._next_body()
            if not (alerts or windows):
                continue  # only oversized items were taken out
            try:
                await asyncio.to_thread(self._post, body)
            except AgentUnreachable:
                self._put_back(alerts, windows)
                self.stats.failed += 1
                return False
            except FeedRefused:
                self.stats.refused += 1
                return False
            self.stats.batches += 1
            self.stats.alerts += len(alerts)
            self.stats.features += len(windows)
        return True

    async def run(self) -> None:
        """Send batches until cancelled."""
        backing_off = False
        while True:
            if backing_off:  # an opened alert does not hurry a retry
                await asyncio.sleep(self._backoff.next_delay())
            else:
                await wait_event(self._wake, self._interval)
            self._wake.clear()
            backing_off = not await self.send_pending()
            if not backing_off:
                self._backoff.reset()

    async def finish(self) -> FeedStats:
        """One last attempt at what waits (at the end of the capture)."""
        await self.send_pending()
        self.stats.unsent = self.pending
        return self.stats
