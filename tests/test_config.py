from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import load_config
from sentinel.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

DETECTOR = """
[[detectors]]
name = "hot"
type = "threshold"
kinds = ["lighting"]
[detectors.params]
metric = "driver_temp_c"
op = ">"
value = 90
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sentinel.toml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_shipped_config_is_valid() -> None:
    cfg = load_config(REPO / "deploy" / "sentinel.toml")
    assert {d.name for d in cfg.detectors} >= {"camera-upload-surge"}
    assert cfg.mqtt.password_file == REPO / "deploy" / ".." / ".stack/secrets/mqtt-agent.password"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[mqtt]\nurll = 'mqtt://x'\n", "mqtt.urll"),
        ("[mqtt]\nurl = 'http://x'\n", "mqtt.url"),
        ("[influxdb]\nbatch_size = 0\n", "influxdb.batch_size"),
        ("[http]\nlisten = 'nowhere'\n", "http.listen"),
        ("[mqt]\nurl = 'mqtt://x'\n", "mqt"),
        (DETECTOR.replace("value = 90", 'value = "hot"'), "detectors[0].params.value"),
        (DETECTOR.replace('op = ">"', 'op = "=>"'), "detectors[0].params.op"),
        (DETECTOR.replace("value = 90", "value = 90\nwindow = 3"), "detectors[0].params.window"),
        (DETECTOR.replace('"threshold"', '"magic"'), "detectors[0].type"),
        (DETECTOR.replace('["lighting"]', '["tractor"]'), "detectors[0].kinds"),
        (DETECTOR + DETECTOR, "detectors"),
    ],
)
def test_a_wrong_key_or_value_is_named(tmp_path: Path, text: str, named: str) -> None:
    found = problems(write(tmp_path, text))
    assert any(p.startswith(named) for p in found), found


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in problems(write(tmp_path, "[mqtt\n"))[0]
    assert "cannot read" in problems(tmp_path / "absent.toml")[0]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_MQTT__URL", "mqtt://broker.example:1884")
    monkeypatch.setenv("SENTINEL_INFLUXDB__BATCH_SIZE", "7")
    cfg = load_config(write(tmp_path, "[mqtt]\nurl = 'mqtt://127.0.0.1:1'\n"))
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("broker.example", 1884)
    assert cfg.influxdb.batch_size == 7
    monkeypatch.setenv("SENTINEL_INFLUXDB__BATCH_SIZE", "many")
    assert problems(write(tmp_path, ""))[0].startswith("influxdb.batch_size")


def test_secrets_come_from_files_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret-value\n")
    cfg = load_config(write(tmp_path, "[mqtt]\npassword_file = 'pw'\n"))
    assert cfg.mqtt.secret() == "s3cret-value"
    assert "s3cret" not in repr(cfg)
    cfg = load_config(write(tmp_path, "[mqtt]\npassword = 'inline-secret'\n"))
    assert "inline-secret" not in repr(cfg)
    assert cfg.mqtt.secret() == "inline-secret"


def test_paths_in_detector_params_are_relative_to_the_config_file(tmp_path: Path) -> None:
    text = """
[validation]
kinds = ["video"]
[[detectors]]
name = "rogue"
type = "inventory"
kinds = ["video"]
[detectors.params]
inventory_file = "fleet/devices.txt"
[[detectors]]
name = "models"
type = "inventory"
kinds = ["video"]
[detectors.params]
inventory_file = "/etc/sentinel/devices.txt"
"""
    cfg = load_config(write(tmp_path, text))
    relative, absolute = (d.params["inventory_file"] for d in cfg.detectors)
    assert relative == str(tmp_path / "fleet" / "devices.txt")
    assert absolute == "/etc/sentinel/devices.txt"
