"""One micro-batch through the agent: decode → validate → admit → store → score → alert.

Every message ends stored, or rejected under a counted reason and kept in the dead letters.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter
from typing import Protocol

import numpy as np
import structlog

from detectors.columns import Columns, Reports
from detectors.model import CommandRecord, Record, StatusRecord, Transition
from sentinel import admission
from sentinel.admission import Admission
from sentinel.alerting.alerts import Alert, AlertBook, AlertSource, Notice
from sentinel.alerting.lines import alert_line, incident_line, score_line
from sentinel.deadletter import DeadLetters
from sentinel.decode import Decoder, Reason, Rejection
from sentinel.engine import Engine, ScoreSample
from sentinel.metrics import Metrics
from sentinel.store.lineprotocol import lines_for

log = structlog.get_logger(__name__)


# A DeviceRef's fields by position: a tuple index, not the NamedTuple's property.
_device_id = itemgetter(3)


class ReportRun(Protocol):
    """Reports handed over as columns, with their topics (simulators.messages.Run)."""

    @property
    def topics(self) -> Sequence[str]: ...

    @property
    def reports(self) -> Reports: ...

    @property
    def senders(self) -> frozenset[str]: ...


class LineSink(Protocol):
    async def put(self, lines: list[str]) -> None: ...


class AlertNotifier(Protocol):
    def notify(self, notices: list[Notice]) -> None: ...


class Pipeline:
    def __init__(
        self,
        *,
        decoder: Decoder,
        store: LineSink | None,
        engine: Engine,
        book: AlertBook,
        notifiers: Sequence[AlertNotifier],
        metrics: Metrics,
        deadletters: DeadLetters,
        max_devices: int,
    ) -> None:
        self.decoder = decoder
        # None: nothing is stored, and no line protocol is formatted (eval keeps no points).
        self.store = store
        self.engine = engine
        self.book = book
        self.notifiers = notifiers
        self.metrics = metrics
        self.deadletters = deadletters
        self.admission = Admission(max_devices)
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    async def process(
        self, batch: Sequence[tuple[str, bytes] | ReportRun], now: float
    ) -> list[Alert]:
        """Each (topic, payload) decoded, admitted, stored and scored. Reports may also come
        already decoded, as columns (a ReportRun): eval's simulated reports, never the
        network's. Those are admitted, not decoded again."""
        started = time.perf_counter()
        records: list[Record] = []
        parts: list[Reports] = []  # in order, when runs came: records and runs
        statuses: list[StatusRecord] = []
        commands: list[CommandRecord] = []
        rejected: Counter[str] = Counter()
        received = 0
        for entry in batch:
            if not isinstance(entry, tuple):
                if records:
                    parts.append(Reports.of_records(records))
                    records = []
                parts.append(self._admit_run(entry, now, rejected))
                received += len(entry.topics)
                continue
            received += 1
            topic, payload = entry
            out = self.decoder.decode(topic, payload, now)
            if not isinstance(out, Rejection) and not self.admission.admit(out.device.device_id):
                out = Rejection(Reason.DEVICE_CAP, "a new device id beyond the cap")
            if isinstance(out, Rejection):
                self._reject(now, topic, payload, out, rejected)
            elif isinstance(out, Record):
                records.append(out)
            elif isinstance(out, CommandRecord):
                commands.append(out)
            else:
                statuses.append(out)
        telemetry: Sequence[Record] | Columns = records
        if parts:
            joined = Reports.join([*parts, Reports.of_records(records)] if records else parts)
            # Slots given once: they route rows to detectors and count them by kind.
            telemetry = self.engine.columns_of(joined)
        self._count(telemetry, statuses, rejected, received)
        self.accepted += len(commands)
        changed = await self.ingest(telemetry, statuses, now, commands)
        flood = self.admission.transitions(now)
        if flood:
            changed += await self.raise_alerts(admission.SOURCE, flood)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return changed

    def _admit_run(self, run: ReportRun, now: float, rejected: Counter[str]) -> Reports:
        """A run's reports whose devices are admitted; the others dead letters."""
        reports = run.reports
        if self.admission.knows_all(run.senders):
            return reports
        if self.admission.known.issuperset(map(_device_id, reports.refs)):
            return reports
        kept = []
        for i, ref in enumerate(reports.refs):
            if self.admission.admit(ref.device_id):
                kept.append(i)
            else:
                rejection = Rejection(Reason.DEVICE_CAP, "a new device id beyond the cap")
                payload = repr(reports.record(i)).encode()
                self._reject(now, run.topics[i], payload, rejection, rejected)
        return reports if len(kept) == len(reports) else reports.select(np.array(kept, np.int64))

    def _reject(
        self, now: float, topic: str, payload: bytes, rejection: Rejection, rejected: Counter[str]
    ) -> None:
        rejected[rejection.reason] += 1
        self.deadletters.add(now, topic, payload, rejection.reason, rejection.detail)
        # Attacker-controlled text: truncated here, escaped by the JSON renderer.
        log.debug(
            "rejected",
            reason=rejection.reason.value,
            detail=rejection.detail,
            topic=topic[:128],
            payload=payload[:64].decode("utf-8", "backslashreplace"),
        )

    async def ingest(
        self,
        records: Sequence[Record] | Columns,
        statuses: Sequence[StatusRecord] = (),
        now: float | None = None,
        commands: Sequence[CommandRecord] = (),
    ) -> list[Alert]:
        """Store and score records that are already valid: decoded telemetry (or reports as
        columns, on the engine's table), or features derived from traffic (sentinel.traffic)
        that enter the engine like any telemetry."""
        rows = records.records if isinstance(records, Columns) else records
        # Store before scoring: a detector failure must not cost the data.
        if self.store is not None and (rows or statuses or commands):
            await self.store.put(lines_for([*rows, *statuses, *commands]))
        changed: list[Alert] = []
        if isinstance(records, Columns):
            results = self.engine.process_columns(records, commands)
        else:
            results = self.engine.process(records, commands)
        for source, transitions in results:
            changed += self.book.apply(source, transitions)
        await self._store_scores(self.engine.take_scores())
        await self.publish(changed, now)
        return changed

    async def raise_alerts(self, source: AlertSource, transitions: list[Transition]) -> list[Alert]:
        """Alerts found outside the engine (traffic and broker-log detections)."""
        changed = self.book.apply(source, transitions)
        await self.publish(changed, max((t.ts for t in transitions), default=None))
        return changed

    async def publish(self, changed: list[Alert], now: float | None) -> None:
        """Store alert and incident changes; notify what the storm policy lets through.

        `now` (device or simulated time) closes the incidents that went quiet."""
        incidents = self.book.tick(now) if now is not None else []
        if self.store is not None and (changed or incidents):
            lines = [alert_line(a) for a in changed]
            lines += [incident_line(incident, state) for incident, state in incidents]
            await self.store.put(lines)
        if changed or incidents:
            notices = self.book.notices(changed)
            for notifier in self.notifiers:
                notifier.notify(notices)

    async def _store_scores(self, samples: list[ScoreSample]) -> None:
        lines = []
        for sample in samples:
            self.metrics.detector_score.labels(sample.detector).observe(sample.score)
            line = score_line(sample) if self.store is not None else None
            if line is not None:
                lines.append(line)
        if self.store is not None and lines:
            await self.store.put(lines)

    def _count(
        self,
        records: Sequence[Record] | Columns,
        statuses: list[StatusRecord],
        rejected: Counter[str],
        received: int,
    ) -> None:
        # One metric update per label per batch, not per message.
        m = self.metrics
        m.messages_received.labels("mqtt").inc(received)
        if isinstance(records, Columns):
            by_kind = records.kind_counts()
        else:
            by_kind = Counter(r.device.kind for r in records)
        for kind, n in by_kind.items():
            m.records_accepted.labels(kind).inc(n)
        for reason, n in rejected.items():
            m.rejects.labels(reason).inc(n)
        self.accepted += len(records) + len(statuses)
        self.rejected.update(rejected)
        m.deadletter_size.set(len(self.deadletters))
        m.tracked_devices.set(len(self.admission.known))
