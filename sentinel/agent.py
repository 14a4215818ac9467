"""The agent: one TaskGroup owns the long-lived tasks; shutdown is cancellation.

MQTT reader ─► inbox ─► batch processor (decode · validate · store · score · alert)
                             ├─► InfluxDB writer (batched, retried)
                             └─► Alertmanager sink (immediate on change, periodic resend)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from detectors.model import Transition
from sentinel import checkpoint
from sentinel import reload as hot_reload
from sentinel.alerting.alertmanager import AlertmanagerSink
from sentinel.alerting.build import alert_policy, build_book
from sentinel.alerting.desk import DeskSettings, OperatorDesk
from sentinel.alerting.mqtt_sink import MqttAlertSink
from sentinel.config import Config
from sentinel.deadletter import DeadLetters
from sentinel.decode import Decoder
from sentinel.engine import Engine, build_instances
from sentinel.errors import ConfigError
from sentinel.httpserver import build_app
from sentinel.inbox import Ack, Delivery, Inbox
from sentinel.ingest import build_reader
from sentinel.metrics import Metrics
from sentinel.operator_api import OperatorApi
from sentinel.partition import subscriptions
from sentinel.pipeline import AlertNotifier, Pipeline
from sentinel.store.influx import InfluxHttp, InfluxWriter
from sentinel.store.locations import location_lines
from sentinel.store.spool import Spool
from sentinel.topics import TopicPattern
from sentinel.traffic.feed import add_routes as add_traffic_feed
from sentinel.traffic.live import load_devices, traffic_tasks

log = structlog.get_logger(__name__)


def build_decoder(config: Config) -> Decoder:
    return Decoder(
        config.validation,
        TopicPattern.parse(config.mqtt.telemetry_topic),
        TopicPattern.parse(config.mqtt.status_topic),
        TopicPattern.parse(config.mqtt.command_topic) if config.mqtt.command_topic else None,
    )


class Agent:
    def __init__(
        self, config: Config, metrics: Metrics | None = None, config_path: Path | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path  # what a reload re-reads
        self.metrics = metrics or Metrics()
        self.book = build_book(config, self.metrics)
        a = config.alerting
        self.desk = OperatorDesk(
            self.book,
            self.metrics,
            DeskSettings(
                a.state_file, a.audit_file, a.max_suppression_days, a.suggestion_expiry_days
            ),
        )
        dl = config.deadletter
        self.deadletters = DeadLetters(dl.capacity, dl.path, dl.max_file_bytes)
        self.decoder = build_decoder(config)
        self.engine = Engine(build_instances(config.detectors))
        self.desk.reject_new_normal = self.engine.reject_new_normal
        if config.checkpoint.path is not None:
            restored = checkpoint.load(self.engine, config.checkpoint.path)
            log.info("checkpoint_loaded", detectors=restored)
        self.inbox = Inbox(config.pipeline.max_pending, config.pipeline.batch_max)
        d = self.decoder
        self.reader = build_reader(
            config.mqtt,
            subscriptions(
                [p for p in (d.telemetry, d.status, d.command) if p is not None],
                config.mqtt.partition,
            ),
            self.inbox,
            self.metrics,
            config.validation.max_payload_bytes,
        )
        self.http_ready = asyncio.Event()
        self._stop = asyncio.Event()
        # (store position, acks) per batch: acked once the store has made them durable.
        self._to_ack: asyncio.Queue[tuple[int, list[Ack | None]]] = asyncio.Queue()
        self.pipeline: Pipeline | None = None
        self.writer: InfluxWriter | None = None
        self.internal_errors = 0

    def request_stop(self) -> None:
        """Stop in order: stop reading, process and store what was received, send alerts."""
        self._stop.set()

    def readiness(self) -> dict[str, bool]:
        return {
            "mqtt": self.reader.connected.is_set(),
            "influxdb": self.writer is not None and self.writer.healthy,
        }

    async def _store_locations(self, writer: InfluxWriter) -> None:
        """Where each inventory device is (measurement device_location), for the SOC's map."""
        path = self.config.traffic.inventory_file
        if path is not None:
            load_devices(path, self.config.validation.kinds)  # tags checked as telemetry's are
            await writer.put(location_lines(path, time.time()))

    async def run(self) -> None:
        cfg = self.config
        async with aiohttp.ClientSession() as session:
            spool_dir = cfg.influxdb.spool_dir
            spool = Spool(spool_dir, cfg.influxdb.spool_max_bytes) if spool_dir else None
            http = InfluxHttp(session, cfg.influxdb)
            self.writer = InfluxWriter(http, cfg.influxdb, self.metrics, spool)
            await self._store_locations(self.writer)
            notifiers: list[AlertNotifier] = []
            am: AlertmanagerSink | None = None
            if cfg.alertmanager.url:
                am = AlertmanagerSink(session, cfg.alertmanager, self.book, self.metrics)
                notifiers.append(am)
            if cfg.alerting.mqtt_topic:
                notifiers.append(MqttAlertSink(cfg.alerting.mqtt_topic, self.reader, self.metrics))
            self.pipeline = Pipeline(
                decoder=self.decoder,
                store=self.writer,
                engine=self.engine,
                book=self.book,
                notifiers=notifiers,
                metrics=self.metrics,
                deadletters=self.deadletters,
                max_devices=cfg.validation.max_devices,
            )
            token = cfg.http.secret()
            operator = OperatorApi(
                self.book,
                self.desk,
                lambda: self.engine,
                self.writer.put,
                self.reload,
                writable=token is not None,
            )
            runner = web.AppRunner(
                build_app(
                    self.metrics,
                    self.readiness,
                    self.book,
                    self.deadletters,
                    token=token,
                    protect_metrics=cfg.http.protect_metrics,
                    operator=operator,
                ),
                access_log=None,
            )
            add_traffic_feed(runner.app, cfg, self.pipeline, self.metrics, token is not None)
            await runner.setup()
            await web.TCPSite(runner, cfg.http.host, cfg.http.port).start()
            self.http_ready.set()
            log.info("agent_started", http=cfg.http.listen, detectors=len(self.engine.instances))
            try:
                async with asyncio.TaskGroup() as tg:
                    reader = tg.create_task(self.reader.run(), name="mqtt-reader")
                    processor = tg.create_task(
                        self._process_until_closed(self.pipeline), name="batch-processor"
                    )
                    acker = tg.create_task(self._ack_when_durable(self.writer), name="acker")
                    saver = tg.create_task(self._checkpoint_periodically(), name="checkpointer")
                    senders = [tg.create_task(self.writer.run(), name="influx-writer")]
                    if am is not None:
                        senders.append(tg.create_task(am.run(), name="alertmanager-sink"))
                    senders += [  # [traffic] sources (none by default), stopped with the senders
                        tg.create_task(coro, name=name)
                        for name, coro in traffic_tasks(cfg, self.pipeline, self.metrics)
                    ]
                    await self._stop.wait()
                    log.info("agent_stopping", pending=len(self.inbox))
                    self.reader.stop()  # from here on nothing more is received
                    self.inbox.close()
                    await processor
                    saver.cancel()
                    self._save_checkpoint()
                    for task in senders:
                        task.cancel()
                    await asyncio.gather(*senders, return_exceptions=True)
                    await self._drain(self.pipeline, self.writer, am)
                    await self._ack_settled(self.writer)  # the last acks, then disconnect
                    acker.cancel()
                    reader.cancel()
            finally:
                await self._drain(self.pipeline, self.writer, am)
                await runner.cleanup()

    async def reload(self, actor: str) -> dict[str, Any]:
        """Re-read the config file (SIGHUP, POST /api/reload); refused with reasons if bad."""
        now = time.time()
        if self.config_path is None:
            problems = ["the agent was not started from a file"]
        else:
            try:
                plan = hot_reload.plan(self.config, self.engine.instances, self.config_path)
            except ConfigError as exc:
                problems = exc.problems
            else:
                await self._apply(plan, now)
                self.metrics.config_reloads.labels("ok").inc()
                self.desk.audit.add(now, actor, "config.reload", **plan.summary())
                log.info("config_reloaded", actor=actor, **plan.summary())
                return {"ok": True, **plan.summary()}
        self.metrics.config_reloads.labels("refused").inc()
        self.desk.audit.add(now, actor, "config.reload_refused", problems=problems)
        log.error("config_reload_refused", actor=actor, problems=problems)
        return {"ok": False, "problems": problems}

    async def _apply(self, plan: hot_reload.ReloadPlan, now: float) -> None:
        # Between two awaits nothing else runs: a batch sees the old detectors or the new.
        removed = set(plan.removed)
        gone = [a for a in self.book.active.values() if a.source.name in removed]
        self.engine.instances = plan.instances
        self.config = plan.config
        self.book.set_policy(alert_policy(plan.config))
        self.book.suppressions.replace_config(plan.suppressions)
        for alert in gone:  # a removed detector's alerts end with it
            cleared = Transition(alert.device, False, now, "detector removed by a reload")
            if self.pipeline is not None:
                await self.pipeline.raise_alerts(alert.source, [cleared])

    async def _process_until_closed(self, pipeline: Pipeline) -> None:
        linger = self.config.pipeline.batch_interval_s
        while not (self.inbox.closed and not len(self.inbox)):
            delivery = await self.inbox.take(linger)
            if delivery.messages:
                await self._process(pipeline, delivery)
            self.metrics.queue_depth.labels("inbox").set(len(self.inbox))

    async def _process(self, pipeline: Pipeline, delivery: Delivery) -> None:
        try:
            await pipeline.process(delivery.messages, time.time())
        except Exception:
            # A bug must not stop ingestion: the batch's data is already queued for storage
            # (the pipeline stores before it scores); log loudly and carry on.
            self.internal_errors += 1
            log.exception("batch_failed", size=len(delivery.messages))
        assert self.writer is not None
        self._to_ack.put_nowait((self.writer.position, delivery.acks))

    async def _checkpoint_periodically(self) -> None:
        if self.config.checkpoint.path is None:
            return
        while True:
            await asyncio.sleep(self.config.checkpoint.interval_s)
            self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        # On the event loop, between batches: the state is consistent and nothing mutates it.
        path = self.config.checkpoint.path
        if path is not None:
            try:
                checkpoint.save(self.engine, path)
            except OSError as exc:
                log.error("checkpoint_failed", path=str(path), error=str(exc))

    async def _ack_when_durable(self, writer: InfluxWriter) -> None:
        while True:
            position, acks = await self._to_ack.get()
            await writer.wait_durable(position)
            self.metrics.mqtt_acked.inc(self.reader.ack(acks))

    async def _ack_settled(self, writer: InfluxWriter) -> None:
        """At shutdown: ack the batches already durable; the rest the broker will resend."""
        while not self._to_ack.empty():
            position, acks = self._to_ack.get_nowait()
            if position > writer.durable:
                break
            self.metrics.mqtt_acked.inc(self.reader.ack(acks))

    async def _drain(
        self, pipeline: Pipeline, writer: InfluxWriter, am: AlertmanagerSink | None
    ) -> None:
        """Write what is pending and send the last alert changes. After an orderly stop the
        inbox is already empty; after a plain cancellation, it is processed here."""
        with contextlib.suppress(Exception):
            self.reader.stop()
            self.inbox.close()
            while len(self.inbox):
                await self._process(pipeline, await self.inbox.take(0))
            left = await writer.flush()
            if am is not None:
                await am.flush()
            log.info("agent_stopped", unwritten_points=left)
