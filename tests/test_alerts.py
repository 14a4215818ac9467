from __future__ import annotations

import orjson

from detectors.model import DeviceRef, Transition
from sentinel.alerting.alertmanager import alertmanager_payload
from sentinel.alerting.alerts import AlertBook, AlertSource, alertname_for
from sentinel.alerting.lines import alert_line
from sentinel.metrics import Metrics
from sentinel.store.lineprotocol import escape_string_field

CAM = DeviceRef("lyon", "gerland", "video", "lyon-cam-00001")
SOURCE = AlertSource("camera-upload-surge", "CameraUploadSurge", "threshold", "critical", "Exfil")


def transition(firing: bool, ts: float, value: float = 50_000.0) -> Transition:
    return Transition(CAM, firing, ts, "upload_kbps crossed", {"value": value})


def test_book_raises_once_resolves_once_and_counts() -> None:
    metrics = Metrics()
    book = AlertBook(metrics)
    raised = book.apply(SOURCE, [transition(True, 100.0), transition(True, 101.0)])
    assert len(raised) == 1
    assert raised[0].summary.startswith("Exfil: ")
    assert len(book.active) == 1
    resolved = book.apply(SOURCE, [transition(False, 160.0, 3000.0)])
    assert [a.firing for a in resolved] == [False]
    assert resolved[0].ends_at == 160.0
    assert book.active == {}
    assert book.apply(SOURCE, [transition(False, 170.0)]) == []
    labels = {"detector": "camera-upload-surge", "severity": "critical"}
    assert metrics.registry.get_sample_value("sentinel_alerts_total", labels) == 1.0
    assert metrics.registry.get_sample_value("sentinel_alerts_active", labels) == 0.0


def test_alertmanager_payload_labels_and_times() -> None:
    book = AlertBook(Metrics())
    (alert,) = book.apply(SOURCE, [transition(True, 1_790_000_000.0)])
    item = alertmanager_payload(alert, now=1_790_000_010.0, resend_interval_s=30, generator="")
    assert item["labels"] == {
        "alertname": "CameraUploadSurge",
        "severity": "critical",
        "tenant": "lyon",
        "zone": "gerland",
        "kind": "video",
        "device_id": "lyon-cam-00001",
        "detector": "camera-upload-surge",
        "incident": alert.incident,
    }
    assert alert.incident.startswith("i-")
    assert item["startsAt"] == "2026-09-21T14:13:20.000Z"
    assert item["endsAt"] == "2026-09-21T14:15:30.000Z"  # now + 4 resend intervals
    annotations = item["annotations"]
    assert isinstance(annotations, dict)
    assert orjson.loads(annotations["evidence"]) == {"value": 50_000.0}
    (done,) = book.apply(SOURCE, [transition(False, 1_790_000_020.0)])
    resolved = alertmanager_payload(done, now=1_790_000_030.0, resend_interval_s=30, generator="")
    assert resolved["endsAt"] == "2026-09-21T14:13:50.000Z"


def test_alertname_and_string_escaping() -> None:
    assert alertname_for("camera-upload-surge") == "CameraUploadSurge"
    assert escape_string_field('a "quoted"\nline\\') == '"a \\"quoted\\"\\nline\\\\"'
    book = AlertBook(Metrics())
    (alert,) = book.apply(SOURCE, [transition(True, 1.5)])
    line = alert_line(alert)
    assert line.startswith(
        "alerts,tenant=lyon,zone=gerland,kind=video,detector=camera-upload-surge,"
    )
    assert "state=firing" in line
    assert line.endswith(" 1500")
