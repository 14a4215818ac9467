"""Write Sentinel's Grafana dashboards (grafana/dashboards/*.json) from the definitions below.

    python grafana/build_dashboards.py           # rewrite the JSON files
    python grafana/build_dashboards.py --check   # exit 1 if a file differs from what is built

The JSON files are committed (Grafana's provisioning reads them); tests/test_grafana.py checks
that they match this script, then runs every query against the real InfluxDB and Prometheus.
Data source uids are the provisioned ones (grafana/provisioning/datasources/sentinel.yml).
"""

# Queries are constant InfluxQL for Grafana, built from constants here: no input reaches them.
# ruff: noqa: S608

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"

INFLUX = {"type": "influxdb", "uid": "sentinel-influxdb"}
PROM = {"type": "prometheus", "uid": "sentinel-prometheus"}

Json = dict[str, Any]

# Tag filters on the template variables. `kind` is a tag of device_status, alerts, observed and
# detector_scores; telemetry measurements are named after the kind (FROM /^$kind$/).
TZ = '"tenant" =~ /^$tenant$/ AND "zone" =~ /^$zone$/'
TZK = TZ + ' AND "kind" =~ /^$kind$/'
DEVICE = '"device_id" =~ /^$device$/'
# In alerts and observed, device_id was a string field and is now a tag; a shard written across
# the change holds both (InfluxDB then shows the field as device_id_1). This matches either.
ALERT_DEVICE = '("device_id"::tag =~ /^$device$/ OR "device_id"::field =~ /^$device$/)'
KINDS_FROM = "/^$kind$/"


# --- building blocks ----------------------------------------------------------------------------


def influx(query: str, ref: str = "A", fmt: str = "time_series", alias: str = "") -> Json:
    target: Json = {
        "refId": ref,
        "datasource": INFLUX,
        "rawQuery": True,
        "resultFormat": fmt,
        "query": query,
    }
    if alias:
        target["alias"] = alias
    return target


def prom(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> Json:
    return {
        "refId": ref,
        "datasource": PROM,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }


def source_of(targets: list[Json]) -> dict[str, str]:
    kinds = {t["datasource"]["uid"] for t in targets}
    if len(kinds) != 1:
        raise ValueError(f"one data source per panel (no mixed panels), got {kinds}")
    return dict(targets[0]["datasource"])


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    unit: str = "short",
    *,
    stack: bool = False,
    overrides: list[Json] | None = None,
    thresholds: list[Json] | None = None,
    bars: bool = False,
) -> Json:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 30 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
    }
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    defaults: Json = {"unit": unit, "custom": custom}
    if thresholds:
        custom["thresholdsStyle"] = {"mode": "line+area"}
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": source_of(targets),
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def stat(title: str, description: str, targets: list[Json], unit: str = "short") -> Json:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": source_of(targets),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}],
                },
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
        },
        "targets": targets,
    }


def table(
    title: str,
    description: str,
    targets: list[Json],
    transformations: list[Json] | None = None,
) -> Json:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": source_of(targets),
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        "transformations": transformations or [],
        "targets": targets,
    }


def bargauge(title: str, description: str, targets: list[Json], unit: str = "short") -> Json:
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": source_of(targets),
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
        },
        "targets": targets,
    }


def histogram(title: str, description: str, targets: list[Json]) -> Json:
    return {
        "type": "histogram",
        "title": title,
        "description": description,
        "datasource": source_of(targets),
        "fieldConfig": {"defaults": {"min": 0, "max": 1}, "overrides": []},
        "options": {"bucketSize": 0.05, "combine": False, "legend": {"showLegend": True}},
        "targets": targets,
    }


def heatmap(title: str, description: str, targets: list[Json]) -> Json:
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": source_of(targets),
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"unit": "short"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges"},
        },
        "targets": targets,
    }


def hide(regex: str) -> Json:
    """Hide the fields whose name matches `regex` (e.g. network features on the telemetry)."""
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.hideFrom", "value": {"legend": True, "tooltip": True, "viz": True}}
        ],
    }


def variable(name: str, label: str, query: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": INFLUX,
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change: new devices appear
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "options": [],
    }


# The four variables every dashboard has; each refers only to the ones before it.
VARIABLES = [
    variable(
        "tenant",
        "Tenant",
        'SHOW TAG VALUES FROM "device_status" WITH KEY = "tenant"',
    ),
    variable(
        "zone",
        "Zone",
        'SHOW TAG VALUES FROM "device_status" WITH KEY = "zone" WHERE "tenant" =~ /^$tenant$/',
    ),
    variable(
        "kind",
        "Kind",
        'SHOW TAG VALUES FROM "device_status" WITH KEY = "kind" WHERE ' + TZ,
    ),
    variable(
        "device",
        "Device",
        'SHOW TAG VALUES FROM "device_status" WITH KEY = "device_id" WHERE ' + TZK,
    ),
]

ALERT_ANNOTATIONS = {
    "datasource": INFLUX,
    "enable": True,
    "iconColor": "red",
    "name": "Alerts",
    "query": (
        'SELECT "summary", "severity", "detector" FROM "alerts" WHERE $timeFilter AND '
        + TZK
        + " AND "
        + ALERT_DEVICE
        + " AND \"state\" = 'firing'"
    ),
    "tagsColumn": "severity",
    "textColumn": "summary",
    "titleColumn": "detector",
}

INCIDENT_ANNOTATIONS = {
    "datasource": INFLUX,
    "enable": True,
    "iconColor": "purple",
    "name": "Incidents opened",
    "query": (
        'SELECT "summary", "incident", "severity" FROM "incidents" '
        "WHERE $timeFilter AND " + TZ + " AND \"state\" = 'open'"
    ),
    "tagsColumn": "severity",
    "textColumn": "summary",
    "titleColumn": "incident",
}


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Json],
    *,
    annotations: list[Json] | None = None,
    variables: list[Json] | None = None,
    time_from: str = "now-6h",
) -> Json:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["sentinel"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": [builtin, *(annotations or [])]},
        "templating": {"list": [*VARIABLES, *(variables or [])]},
        "links": [
            {
                "type": "dashboards",
                "tags": ["sentinel"],
                "asDropdown": True,
                "title": "Sentinel",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": list(layout(panels)),
    }


def layout(panels: list[Json]) -> Iterator[Json]:
    """Number the panels and place them left to right, two by two unless sized otherwise.

    No row panels: tests/test_compose.py expects every panel to carry targets."""
    x = y = height = 0
    for number, panel in enumerate(panels, start=1):
        width, h = panel.pop("width", 12), panel.pop("height", 8)
        if x + width > 24:
            x, y, height = 0, y + height, 0
        yield {"id": number, **panel, "gridPos": {"h": h, "w": width, "x": x, "y": y}}
        x += width
        height = max(height, h)


def sized(panel: Json, width: int, height: int = 8) -> Json:
    return {**panel, "width": width, "height": height}


# --- SOC overview -------------------------------------------------------------------------------


def soc() -> Json:
    geomap_targets = [
        influx(
            'SELECT last("lat") AS "lat", last("lon") AS "lon" FROM "device_location" '
            "WHERE " + TZK + ' GROUP BY "device_id", "tenant", "zone", "kind"',
            "location",
            "table",
        ),
        influx(
            'SELECT last("online") AS "online" FROM "device_status" WHERE $timeFilter AND '
            + TZK
            + ' GROUP BY "device_id"',
            "status",
            "table",
        ),
        influx(
            'SELECT max("score") AS "score" FROM "detector_scores" WHERE $timeFilter AND '
            + TZK
            + ' GROUP BY "device_id"',
            "score",
            "table",
        ),
    ]
    geomap = {
        "type": "geomap",
        "title": "Devices: online and anomaly score",
        "description": (
            "Each device at its inventory position (measurement device_location). Colour: the "
            "highest detector score in the time range (green 0 to red 1); grey when it has no "
            "score. Hover for the last status (online 1/0)."
        ),
        "datasource": INFLUX,
        "fieldConfig": {
            "defaults": {
                "min": 0,
                "max": 1,
                "color": {"mode": "continuous-GrYlRd"},
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "green", "value": None}, {"color": "red", "value": 0.5}],
                },
            },
            "overrides": [],
        },
        "options": {
            "view": {"id": "coords", "lat": 45.75, "lon": 4.85, "zoom": 11.5},
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
            "basemap": {"type": "default", "name": "Basemap"},
            "layers": [
                {
                    "type": "markers",
                    "name": "Devices",
                    "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                    "config": {
                        "showLegend": True,
                        "style": {
                            "size": {"fixed": 6},
                            "color": {"field": "score", "fixed": "text"},
                            "opacity": 0.8,
                            "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                        },
                    },
                    "tooltip": True,
                }
            ],
            "tooltip": {"mode": "details"},
        },
        "transformations": [
            {"id": "joinByField", "options": {"byField": "device_id", "mode": "outer"}},
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Time 1": True}}},
        ],
        "targets": geomap_targets,
    }
    return dashboard(
        "sentinel-soc",
        "Sentinel — SOC overview",
        "What is under attack, where, since when: incidents and alerts by severity, tenant and "
        "zone, the fleet on a map, the incident timeline and the most anomalous devices.",
        [
            sized(
                stat(
                    "Open incidents",
                    "Incidents the agent holds open now (all tenants: Prometheus has no tenant "
                    "label).",
                    [prom("sum(sentinel_incidents_open)", "open", instant=True)],
                ),
                6,
                5,
            ),
            sized(
                stat(
                    "Firing alerts by severity",
                    "Alerts firing now, all tenants (sentinel_alerts_active).",
                    [
                        prom(
                            "sum by (severity) (sentinel_alerts_active)",
                            "{{severity}}",
                            instant=True,
                        )
                    ],
                ),
                10,
                5,
            ),
            sized(
                stat(
                    "Incidents in range",
                    "Distinct incidents opened or grown in the time range, for the selection.",
                    [
                        influx(
                            'SELECT count(distinct("incident")) AS "incidents" FROM "incidents" '
                            "WHERE $timeFilter AND " + TZ
                        )
                    ],
                ),
                8,
                5,
            ),
            table(
                "Incidents by severity, tenant and zone",
                "Distinct incidents seen in the time range (opened, grown or closed).",
                [
                    influx(
                        'SELECT count(distinct("incident")) AS "incidents", '
                        'max("devices") AS "devices", max("alerts") AS "alerts" '
                        'FROM "incidents" WHERE $timeFilter AND '
                        + TZ
                        + ' GROUP BY "severity", "tenant", "zone"',
                        fmt="table",
                    )
                ],
            ),
            table(
                "Alerts raised by severity, tenant and zone",
                "Alerts that started firing in the time range (InfluxDB measurement alerts).",
                [
                    influx(
                        'SELECT count("fingerprint") AS "alerts" FROM "alerts" '
                        "WHERE $timeFilter AND "
                        + TZK
                        + ' AND "state" = \'firing\' GROUP BY "severity", "tenant", "zone"',
                        fmt="table",
                    )
                ],
            ),
            sized(geomap, 14, 14),
            sized(
                table(
                    "Top anomalous devices",
                    "The ten devices with the highest detector score in the time range.",
                    [
                        influx(
                            'SELECT top("score", "device_id", 10) AS "score", "detector", '
                            '"zone", "kind" FROM "detector_scores" WHERE $timeFilter AND ' + TZK,
                            fmt="table",
                        )
                    ],
                    [{"id": "sortBy", "options": {"sort": [{"field": "score", "desc": True}]}}],
                ),
                10,
                14,
            ),
            sized(
                timeseries(
                    "Alerts raised per interval, by severity",
                    "Alerts starting to fire, per time bucket.",
                    [
                        influx(
                            'SELECT count("fingerprint") FROM "alerts" WHERE $timeFilter AND '
                            + TZK
                            + " AND \"state\" = 'firing' GROUP BY time($__interval), "
                            '"severity" fill(0)',
                            alias="$tag_severity",
                        )
                    ],
                    stack=True,
                    bars=True,
                ),
                24,
            ),
            sized(
                table(
                    "Incident timeline",
                    "Every change of an incident (open, updated, closed), newest first.",
                    [
                        influx(
                            'SELECT "state", "severity", "tenant", "zone", "detector", '
                            '"incident", "alerts", "devices", "summary" FROM "incidents" '
                            "WHERE $timeFilter AND " + TZ + " ORDER BY time DESC LIMIT 500",
                            fmt="table",
                        )
                    ],
                ),
                24,
                10,
            ),
        ],
        annotations=[INCIDENT_ANNOTATIONS],
    )


# --- device -------------------------------------------------------------------------------------


def device() -> Json:
    scores = influx(
        'SELECT max("score") FROM "detector_scores" WHERE $timeFilter AND '
        + TZK
        + " AND "
        + DEVICE
        + ' GROUP BY time($__interval), "detector" fill(none)',
        alias="$tag_detector",
    )
    return dashboard(
        "sentinel-device",
        "Sentinel — device",
        "One device (pick it with the Device variable): telemetry with its alerts as "
        "annotations, detector scores against their thresholds, network features, status and "
        "identity changes.",
        [
            sized(
                timeseries(
                    "Telemetry",
                    "What the device reports (network features are in their own panel).",
                    [
                        influx(
                            "SELECT mean(*) FROM "
                            + KINDS_FROM
                            + " WHERE $timeFilter AND "
                            + TZ
                            + " AND "
                            + DEVICE
                            + ' GROUP BY time($__interval), "device_id" fill(none)',
                            alias="$col",
                        )
                    ],
                    overrides=[hide(".*(net_|seq).*")],
                ),
                24,
                9,
            ),
            timeseries(
                "Anomaly score by detector",
                "Highest score per interval (0..1); the line is the default decision "
                "threshold of the seasonal detector (0.5).",
                [scores],
                "percentunit",
                thresholds=[
                    {"color": "transparent", "value": None},
                    {"color": "red", "value": 0.5},
                ],
            ),
            timeseries(
                "Value against the expected band",
                "The scored metric with the band the detector expected (scoring detectors).",
                [
                    influx(
                        'SELECT mean("value") AS "value", min("expected_low") AS "expected low", '
                        'max("expected_high") AS "expected high" FROM "detector_scores" '
                        "WHERE $timeFilter AND "
                        + TZK
                        + " AND "
                        + DEVICE
                        + ' GROUP BY time($__interval), "detector" fill(none)',
                        alias="$tag_detector $col",
                    )
                ],
            ),
            timeseries(
                "Network features",
                "Traffic the gateway or a capture saw for the device (net_* fields).",
                [
                    influx(
                        "SELECT mean(/^net_/) FROM "
                        + KINDS_FROM
                        + " WHERE $timeFilter AND "
                        + TZ
                        + " AND "
                        + DEVICE
                        + ' GROUP BY time($__interval), "device_id" fill(none)',
                        alias="$col",
                    )
                ],
            ),
            timeseries(
                "Online",
                "Status reports and last wills (1 online, 0 offline).",
                [
                    influx(
                        'SELECT last("online") FROM "device_status" WHERE $timeFilter AND '
                        + TZK
                        + " AND "
                        + DEVICE
                        + ' GROUP BY time($__interval), "device_id" fill(previous)',
                        alias="$tag_device_id",
                    )
                ],
            ),
            sized(
                table(
                    "Alerts on this device",
                    "Every alert transition of the device, newest first, with its incident and "
                    "MITRE ATT&CK for ICS technique.",
                    [
                        influx(
                            'SELECT "state", "severity", "detector", "summary", "incident", '
                            '"mitre", "evidence" FROM "alerts" WHERE $timeFilter AND '
                            + TZK
                            + " AND "
                            + ALERT_DEVICE
                            + " ORDER BY time DESC LIMIT 200",
                            fmt="table",
                        )
                    ],
                ),
                24,
            ),
            sized(
                table(
                    "Identity",
                    "The identity the device's gateway reports with its telemetry (client id, "
                    "source IP, firmware, configuration hash), newest first; the identity "
                    "detector's alerts mark each change.",
                    [
                        influx(
                            'SELECT "info.client_id", "info.src_ip", "info.firmware", '
                            '"info.config_hash" FROM /^$kind$/ WHERE $timeFilter AND '
                            + TZ
                            + " AND "
                            + DEVICE
                            + " ORDER BY time DESC LIMIT 200",
                            fmt="table",
                        )
                    ],
                ),
                24,
            ),
        ],
        annotations=[ALERT_ANNOTATIONS],
        time_from="now-3h",
    )


# --- detector tuning ----------------------------------------------------------------------------


def tuning() -> Json:
    detector_var = variable(
        "detector",
        "Detector",
        'SHOW TAG VALUES FROM "alerts" WITH KEY = "detector" WHERE ' + TZK,
    )
    det = ' AND "detector" =~ /^$detector$/'
    return dashboard(
        "sentinel-tuning",
        "Sentinel — detector tuning",
        "For operators tuning detectors: how scores are distributed, how many alerts each "
        "detector raises, how often analysts mark them false positives, and what observe-only "
        "detectors would have raised.",
        [
            histogram(
                "Score distribution (selection)",
                "Scores of the selected devices in the time range (InfluxDB detector_scores).",
                [
                    influx(
                        'SELECT "score" FROM "detector_scores" WHERE $timeFilter AND '
                        + TZK
                        + " AND "
                        + DEVICE
                        + det,
                        alias="$tag_detector",
                    )
                ],
            ),
            heatmap(
                "Score distribution over time (all devices)",
                "sentinel_detector_score histogram: how many batch scores fell in each bucket.",
                [
                    {
                        **prom(
                            "sum by (le) (increase(sentinel_detector_score_bucket"
                            '{detector=~"$detector"}[$__rate_interval]))',
                            "{{le}}",
                        ),
                        "format": "heatmap",
                    }
                ],
            ),
            timeseries(
                "Alerts raised per detector",
                "Alerts starting to fire, per time bucket, for the selection.",
                [
                    influx(
                        'SELECT count("fingerprint") FROM "alerts" WHERE $timeFilter AND '
                        + TZK
                        + det
                        + " AND \"state\" = 'firing' GROUP BY time($__interval), "
                        '"detector" fill(0)',
                        alias="$tag_detector",
                    )
                ],
                stack=True,
                bars=True,
            ),
            timeseries(
                "Alerts suppressed per detector",
                "Alerts muted by suppressions, maintenance windows or inhibition (all tenants).",
                [
                    prom(
                        "sum by (detector) (increase(sentinel_alerts_suppressed_total"
                        '{detector=~"$detector"}[$__rate_interval]))',
                        "{{detector}}",
                    )
                ],
                stack=True,
            ),
            table(
                "Feedback by detector and verdict",
                "Analyst verdicts in the time range: tp true positive, fp false positive, benign.",
                [
                    influx(
                        'SELECT count("target") AS "marks" FROM "feedback" WHERE $timeFilter AND '
                        + TZ
                        + det
                        + ' GROUP BY "detector", "verdict"',
                        fmt="table",
                    )
                ],
            ),
            bargauge(
                "False-positive rate by detector",
                "Share of feedback marked fp over the time range (all tenants).",
                [
                    prom(
                        'sum by (detector) (increase(sentinel_feedback_total{verdict="fp",'
                        'detector=~"$detector"}[$__range])) / sum by (detector) '
                        '(increase(sentinel_feedback_total{detector=~"$detector"}[$__range]))',
                        "{{detector}}",
                        instant=True,
                    )
                ],
                "percentunit",
            ),
            timeseries(
                "Observe-only: would have raised",
                'What detectors in mode = "observe" would have raised, per time bucket '
                "(measurement observed).",
                [
                    influx(
                        'SELECT count("fingerprint") FROM "observed" WHERE $timeFilter AND '
                        + TZK
                        + " AND \"state\" = 'firing' GROUP BY time($__interval), "
                        '"detector" fill(0)',
                        alias="$tag_detector",
                    )
                ],
                stack=True,
                bars=True,
            ),
            table(
                "Observe-only results against alerting detectors",
                "Per detector over the time range: alerts it would have raised (observed) and "
                "alerts raised (all tenants; sentinel_observed_total, sentinel_alerts_total).",
                [
                    prom(
                        "sum by (detector) (increase(sentinel_observed_total[$__range]))",
                        "observed {{detector}}",
                        "A",
                        instant=True,
                    ),
                    prom(
                        "sum by (detector) (increase(sentinel_alerts_total[$__range]))",
                        "raised {{detector}}",
                        "B",
                        instant=True,
                    ),
                ],
            ),
            sized(
                table(
                    "Observed alerts",
                    "Each alert an observe-only detector would have raised, newest first.",
                    [
                        influx(
                            'SELECT "detector", "severity", "device_id", "summary", "evidence" '
                            'FROM "observed" WHERE $timeFilter AND '
                            + TZK
                            + " AND \"state\" = 'firing' ORDER BY time DESC LIMIT 200",
                            fmt="table",
                        )
                    ],
                ),
                24,
            ),
        ],
        variables=[detector_var],
        time_from="now-7d",
    )


# --- pipeline and broker health -----------------------------------------------------------------


def pipeline() -> Json:
    # The first five panels are the starter dashboard's (tests/test_compose.py checks them).
    starter = [
        timeseries(
            "Ingest rate",
            "MQTT messages received by the agent, per second (1 min rate).",
            [prom("rate(sentinel_messages_received_total[1m])", "{{instance}} {{source}}")],
        ),
        timeseries(
            "Rejects by reason",
            "Messages the agent rejected (counted, dead-lettered), per second, by reason.",
            [prom("sum by (reason) (rate(sentinel_rejects_total[5m]))", "{{reason}}")],
        ),
        timeseries(
            "Alerts raised",
            "Alerts raised since the agent started, by detector and severity.",
            [
                prom(
                    "sum by (detector, severity) (sentinel_alerts_total)",
                    "{{detector}} ({{severity}})",
                )
            ],
        ),
        timeseries(
            "InfluxDB write latency p95",
            "95th percentile of the agent's InfluxDB batch writes (5 min).",
            [
                prom(
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(sentinel_influx_write_seconds_bucket[5m])))",
                    "p95",
                )
            ],
            "s",
        ),
        sized(
            timeseries(
                "Camera upload (kbps) by device",
                "Mean upload_kbps of each video device, from InfluxDB.",
                [
                    influx(
                        'SELECT mean("upload_kbps") FROM "video" WHERE $timeFilter '
                        'GROUP BY time($__interval), "device_id"',
                        alias="$tag_device_id",
                    )
                ],
                "Kbits",
            ),
            24,
            9,
        ),
    ]
    rate = "[$__rate_interval]"
    return dashboard(
        "sentinel-pipeline",
        "Sentinel — pipeline and broker health",
        "Health of the Sentinel agent's pipeline and of the broker: ingest, lag, rejects, "
        "storage writes and spool, notifications, and Mosquitto's $SYS gauges.",
        [
            *starter,
            timeseries(
                "Records accepted by kind",
                "Records that passed validation, per second.",
                [prom(f"sum by (kind) (rate(sentinel_records_accepted_total{rate}))", "{{kind}}")],
            ),
            timeseries(
                "Points stored by kind (InfluxDB)",
                "Telemetry points of the selection per interval, as stored.",
                [
                    influx(
                        'SELECT count("seq") FROM '
                        + KINDS_FROM
                        + " WHERE $timeFilter AND "
                        + TZ
                        + " GROUP BY time($__interval) fill(0)",
                        alias="$measurement",
                    )
                ],
            ),
            timeseries(
                "Queue depth",
                "Items waiting between stages: inbox (received, not yet processed) and influx "
                "(lines not yet written). A growing inbox is detector lag.",
                [prom("sum by (queue) (sentinel_queue_depth)", "{{queue}}")],
            ),
            timeseries(
                "Batch processing time",
                "Time to decode, store-enqueue and score one micro-batch (p50, p95).",
                [
                    prom(
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(sentinel_batch_seconds_bucket{rate})))",
                        "p50",
                        "A",
                    ),
                    prom(
                        "histogram_quantile(0.95, sum by (le) "
                        f"(rate(sentinel_batch_seconds_bucket{rate})))",
                        "p95",
                        "B",
                    ),
                ],
                "s",
            ),
            timeseries(
                "Dead letters held",
                "Rejected messages kept for inspection (GET /api/deadletters); capped.",
                [prom("sum(sentinel_deadletter_entries)", "entries")],
            ),
            timeseries(
                "Tracked devices and MQTT session",
                "Distinct devices admitted (capped by validation.max_devices) and whether the "
                "agent is subscribed (1).",
                [
                    prom("sum(sentinel_tracked_devices)", "devices", "A"),
                    prom("sum(sentinel_mqtt_connected)", "subscribed", "B"),
                ],
            ),
            timeseries(
                "InfluxDB points written",
                "Points acknowledged by InfluxDB, per second.",
                [prom(f"sum(rate(sentinel_influx_points_written_total{rate}))", "points/s")],
            ),
            timeseries(
                "InfluxDB write errors",
                "Failed writes per second: unavailable (retried, then spooled) or rejected.",
                [
                    prom(
                        f"sum by (kind) (rate(sentinel_influx_write_errors_total{rate}))",
                        "{{kind}}",
                    )
                ],
            ),
            timeseries(
                "Spool",
                "Bytes waiting in the on-disk spool while InfluxDB is away, and its cap.",
                [
                    prom("sum(sentinel_spool_bytes)", "spooled", "A"),
                    prom("sum(sentinel_spool_capacity_bytes)", "capacity", "B"),
                ],
                "bytes",
            ),
            timeseries(
                "Notifications",
                "Alert notifications sent per sink, and dropped by reason (per second).",
                [
                    prom(
                        f"sum by (sink) (rate(sentinel_notifications_total{rate}))",
                        "sent {{sink}}",
                        "A",
                    ),
                    prom(
                        f"sum by (reason) (rate(sentinel_notifications_dropped_total{rate}))",
                        "dropped {{reason}}",
                        "B",
                    ),
                    prom(
                        f"sum(rate(sentinel_alertmanager_post_errors_total{rate}))",
                        "Alertmanager post errors",
                        "C",
                    ),
                ],
            ),
            timeseries(
                "Broker clients",
                "Clients by state ($SYS/broker/clients/*; [traffic] sys_topics = true).",
                [prom("sum by (state) (sentinel_broker_clients)", "{{state}}")],
            ),
            timeseries(
                "Broker PUBLISH rate",
                "PUBLISH packets per second received, sent and dropped (1 min average).",
                [
                    prom(
                        'sum by (direction) (sentinel_broker_publish_per_second{window="1min"})',
                        "{{direction}}",
                    )
                ],
            ),
            timeseries(
                "Broker bytes",
                "Bytes per second received and sent by the broker (1 min average).",
                [
                    prom(
                        'sum by (direction) (sentinel_broker_bytes_per_second{window="1min"})',
                        "{{direction}}",
                    )
                ],
                "Bps",
            ),
            timeseries(
                "Broker store and drops",
                "Subscriptions, retained and stored messages, and PUBLISH dropped since start.",
                [
                    prom("sum(sentinel_broker_subscriptions)", "subscriptions", "A"),
                    prom("sum(sentinel_broker_retained_messages)", "retained", "B"),
                    prom("sum(sentinel_broker_stored_messages)", "stored", "C"),
                    prom("sum(sentinel_broker_publish_dropped_messages)", "dropped", "D"),
                ],
            ),
        ],
        time_from="now-1h",
    )


BUILDERS = {
    "sentinel-soc.json": soc,
    "sentinel-device.json": device,
    "sentinel-tuning.json": tuning,
    "sentinel-pipeline.json": pipeline,
}


def render(board: Json) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    for name, build in BUILDERS.items():
        path, text = OUT / name, render(build())
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python grafana/build_dashboards.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
