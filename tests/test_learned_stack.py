"""`sentinel train` against the real InfluxDB: history in, model version out, detector flags."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from detectors.learned import LearnedDetector, LearnedParams, WindowVerdict
from sentinel.cli import app
from sentinel.config import InfluxConfig, load_config
from sentinel.store.influx import InfluxHttp
from sentinel.store.lineprotocol import lines_for
from tests.conftest import Stack, influxql
from tests.stack_env import require_stack, secret
from tests.test_learned_example import METRICS, T0, camera_fleet

pytestmark = pytest.mark.stack


async def _write(stack: Stack, db: str, records: list[object]) -> None:
    cfg = InfluxConfig(url=stack.influx_url, database=db, password=secret("influx-agent"))
    async with aiohttp.ClientSession() as session:
        http = InfluxHttp(session, cfg)
        lines = lines_for(records)  # type: ignore[arg-type]
        for i in range(0, len(lines), 5000):
            await http.write("\n".join(lines[i : i + 5000]).encode())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def test_train_from_influxdb_then_detect(tmp_path: Path) -> None:
    stack = Stack(require_stack("influxdb"))
    db = f"test_learned_{uuid.uuid4().hex[:10]}"
    tenant = f"t{uuid.uuid4().hex[:8]}"
    history = camera_fleet(12, 96, seed=21, tenant=tenant)
    # Another kind in the same database: the detector's kinds select what is read.
    decoy = [replace(r, device=r.device._replace(kind="lighting")) for r in history[:2000]]
    asyncio.run(influxql(stack, f'CREATE DATABASE "{db}"'))
    try:
        asyncio.run(influxql(stack, f'GRANT ALL ON "{db}" TO "{stack.env["STACK_INFLUX_USER"]}"'))
        asyncio.run(_write(stack, db, [*history, *decoy]))
        models = tmp_path / "models"
        config = tmp_path / "sentinel.toml"
        password_file = Path(stack.env["STACK_SECRETS_DIR"]) / "influx-agent.password"
        config.write_text(
            f"""
[influxdb]
url = "{stack.influx_url}"
database = "{db}"
username = "{stack.env["STACK_INFLUX_USER"]}"
password_file = "{password_file}"

[[detectors]]
name = "camera-behaviour"
type = "learned"
kinds = ["video"]
[detectors.params]
metrics = {json.dumps(list(METRICS))}
model_dir = "{models}"
budget_per_1000_device_hours = 1.0
""",
            encoding="utf-8",
        )
        argv = ["train", "-c", str(config), "--detector", "camera-behaviour", "--json"]
        argv += ["--since", _iso(T0), "--until", _iso(T0 + 96 * 3600), "--window", "6h"]
        argv += ["--chunk-size", "1000"]
        out = CliRunner().invoke(app, argv)
        assert out.exit_code == 0, out.output
        meta = json.loads(out.stdout)
        assert meta["training"]["rows"] == len(history)  # the decoy kind was not read
        assert meta["training"]["windows"] == 12 * 96 * 12
        assert meta["training"]["devices"] == 12
        assert Path(meta["path"]).parent == models

        wrong = CliRunner().invoke(app, ["train", "-c", str(config), "--detector", "nope"])
        assert wrong.exit_code == 2
        assert "no detector named 'nope'" in wrong.output
    finally:
        asyncio.run(influxql(stack, f'DROP DATABASE "{db}"'))

    # The agent's detector, built from the same configuration, loads the saved version.
    (det_cfg,) = load_config(config).detectors
    params = det_cfg.parsed_params()
    assert isinstance(params, LearnedParams)
    detector = LearnedDetector(params)
    later = camera_fleet(12, 6, seed=22, start=T0 + 96 * 3600, tenant=tenant)
    victim = later[0].device
    attack = (later[0].ts + 3 * 3600, later[0].ts + 3 * 3600 + 900)
    stream = [
        replace(r, metrics={**r.metrics, "upload_kbps": r.metrics["upload_kbps"] * 2.5})
        if r.device == victim and attack[0] <= r.ts < attack[1]
        else r
        for r in later
    ]
    verdicts = [v for v in detector.decide(stream) if isinstance(v, WindowVerdict)]
    assert detector.model is not None
    assert detector.model.version == Path(meta["path"]).name
    assert len(verdicts) > 12 * 6 * 12 - 20
    raised = [v for v in verdicts if v.change == "raise"]
    assert [v.device for v in raised] == [victim]
    assert attack[0] <= raised[0].ts < attack[1]
    flagged_normal = [v for v in verdicts if v.anomalous and v.device != victim]
    assert flagged_normal == []
