"""Send alerts to Alertmanager's `/api/v2/alerts`.

Firing alerts carry an `endsAt` a few resend intervals ahead and are re-sent every interval,
so Alertmanager resolves them by itself if the agent dies. A cleared alert is sent once more
with `endsAt` = now. Posting never blocks the pipeline: changes queue here and a failed post
is retried at the next tick.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiohttp
import structlog

from sentinel.alerting.alerts import AlertBook, Notice
from sentinel.asyncutil import wait_event
from sentinel.config import AlertmanagerConfig
from sentinel.metrics import Metrics

log = structlog.get_logger(__name__)

# How many resend intervals a firing alert stays valid without a resend.
_VALIDITY_INTERVALS = 4


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_payload(
    alert: Notice, now: float, resend_interval_s: float, generator: str
) -> dict[str, object]:
    if alert.firing:
        ends = max(now, alert.starts_at) + _VALIDITY_INTERVALS * resend_interval_s
    else:
        # Alertmanager refuses endsAt before startsAt; device clocks may run a little ahead.
        ends = max(now, alert.starts_at + 0.001)
    item: dict[str, object] = {
        "labels": alert.labels(),
        "annotations": {"summary": alert.summary[:1024], "evidence": alert.evidence_json()[:4096]},
        "startsAt": _iso(alert.starts_at),
        "endsAt": _iso(ends),
    }
    if generator:
        item["generatorURL"] = generator
    return item


class AlertmanagerSink:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        cfg: AlertmanagerConfig,
        book: AlertBook,
        metrics: Metrics,
    ) -> None:
        self._session = session
        self._cfg = cfg
        self._book = book
        self._metrics = metrics
        self._changes: dict[str, Notice] = {}
        self._wake = asyncio.Event()

    def notify(self, notices: list[Notice]) -> None:
        for notice in notices:
            self._changes[notice.fingerprint] = notice
        if notices:
            self._wake.set()

    async def run(self) -> None:
        next_resend = time.monotonic() + self._cfg.resend_interval_s
        while True:
            timeout = max(0.0, next_resend - time.monotonic())
            await wait_event(self._wake, timeout)
            self._wake.clear()
            batch = self._changes
            self._changes = {}
            if time.monotonic() >= next_resend:
                next_resend = time.monotonic() + self._cfg.resend_interval_s
                batch = {n.fingerprint: n for n in self._book.notified_active()} | batch
            if batch and not await self._post(list(batch.values())):
                # Keep what failed unless a newer state for it arrived meanwhile.
                self._changes = {**batch, **self._changes}
                await asyncio.sleep(min(5.0, self._cfg.resend_interval_s))

    async def flush(self) -> None:
        if self._changes:
            await self._post(list(self._changes.values()))
            self._changes = {}

    async def _post(self, alerts: list[Notice]) -> bool:
        assert self._cfg.url is not None
        now = time.time()
        body = [
            alertmanager_payload(a, now, self._cfg.resend_interval_s, self._cfg.generator_url)
            for a in alerts
        ]
        try:
            async with self._session.post(
                f"{self._cfg.url.rstrip('/')}/api/v2/alerts",
                json=body,
                timeout=aiohttp.ClientTimeout(total=self._cfg.timeout_s),
            ) as resp:
                if resp.status == 200:
                    self._metrics.notifications.labels("alertmanager").inc(len(alerts))
                    return True
                text = (await resp.text())[:300]
                self._metrics.alertmanager_errors.inc()
                log.warning("alertmanager_refused", status=resp.status, body=text)
                # A 4xx will not heal by resending the same alerts; 429 and 5xx may.
                return 400 <= resp.status < 500 and resp.status != 429
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("alertmanager_unreachable", error=type(exc).__name__)
        self._metrics.alertmanager_errors.inc()
        return False
