"""Issue 8's ingest benchmark: Sentinel's agent, once per MQTT reader (paho and native),
against mosquitto_sub and prometheus-mqtt-exporter on one recorded stream through the stack's
Mosquitto.

    .venv/bin/python -m benchmarks.ingest [--messages 200000] [--out benchmarks/results/ingest.json]

Modules: `stream` (record the simulator once, publish it paced or flat out), `procstat`
(CPU and RSS from /proc, idle detection), one module per receiver (`recv_mosquitto`,
`recv_exporter`, `recv_agent`), `measure` (one receiver on one stream), `latency` (anomaly
to Alertmanager), `memory` (bytes per tracked device), `influx_writes` (InfluxWriter against
curl), `report` (ratios, targets, table, JSON).
"""
