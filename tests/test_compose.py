"""deploy/docker-compose.yml and grafana/ stay consistent with the local stack (no services needed).

Docker cannot run on the project's machines, so these tests read the files: the compose file must
use the same ports as deploy/local/stack (read from the script, so a change on one side breaks
this test), mount configs that exist, and Grafana's provisioning must parse and reference itself
correctly.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
STACK_SCRIPT = DEPLOY / "local" / "stack"
GRAFANA = REPO / "grafana"
STACK_VOLUME = "stack"
STACK_MOUNT = "/stack"
# The CA certificate `stack render` makes (tls/ in the stack volume); MQTT clients verify with it.
STACK_CA_FILE = f"{STACK_MOUNT}/tls/ca.crt"
GRAFANA_PORT = 3000

# Which stack ports each compose service may mention; every one of them must appear at least once.
# MQTT clients and the broker's healthcheck use the TLS listener (STACK_MQTTS_PORT).
SERVICE_PORT_KEYS: dict[str, set[str]] = {
    "mosquitto": {"STACK_MQTTS_PORT"},
    "influxdb": {"STACK_INFLUX_PORT"},
    "prometheus": {"STACK_PROM_PORT"},
    "alertmanager": {"STACK_AM_PORT"},
    "agent": {"STACK_MQTTS_PORT", "STACK_INFLUX_PORT", "STACK_AM_PORT", "STACK_AGENT_PORT"},
    "simulator": {"STACK_MQTTS_PORT"},
    "grafana": set(),
    "init": set(),
    "influx-init": set(),
}
# Agent environment overrides (SENTINEL_<SECTION>__<KEY>) and the URL each must equal.
AGENT_ENV_URLS = {
    "SENTINEL_MQTT__URL": "mqtts://127.0.0.1:{STACK_MQTTS_PORT}",
    "SENTINEL_INFLUXDB__URL": "http://127.0.0.1:{STACK_INFLUX_PORT}",
    "SENTINEL_ALERTMANAGER__URL": "http://127.0.0.1:{STACK_AM_PORT}",
    "SENTINEL_HTTP__LISTEN": "127.0.0.1:{STACK_AGENT_PORT}",
}
DATASOURCE_PORT_KEYS = {
    "prometheus": "STACK_PROM_PORT",
    "influxdb": "STACK_INFLUX_PORT",
    "alertmanager": "STACK_AM_PORT",
}
PORT_RE = re.compile(
    r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1\]):(\d{2,5})\b|\s-p\s+(\d{2,5})\b"
)


def stack_defaults() -> dict[str, int]:
    """The STACK_*_PORT defaults written in deploy/local/stack as ``X=${X:-1234}``."""
    text = STACK_SCRIPT.read_text(encoding="utf-8")
    found = re.findall(r"^(STACK_[A-Z_]+_PORT)=\$\{\1:-(\d+)\}$", text, flags=re.MULTILINE)
    return {key: int(value) for key, value in found}


def stack_secret_names() -> set[str]:
    text = STACK_SCRIPT.read_text(encoding="utf-8")
    match = re.search(r"^SECRET_NAMES=\(([^)]*)\)", text, flags=re.MULTILINE)
    assert match, "SECRET_NAMES=(...) not found in deploy/local/stack"
    return set(match.group(1).split())


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    svcs = compose()["services"]
    assert isinstance(svcs, dict)
    return svcs


def strings(node: Any) -> Iterator[str]:
    """Every string (keys, values, list items) inside a YAML node."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif node is not None:
        yield str(node)


def text_of(node: Any) -> str:
    return "\n".join(" " + s for s in strings(node))


def ports_in(node: Any) -> set[int]:
    return {int(a or b) for a, b in PORT_RE.findall(text_of(node))}


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume; a source starting with . or / is a bind mount."""
    out: list[tuple[str, str]] = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            out.append((parts[0], parts[1]))
        else:
            out.append((str(vol["source"]), str(vol["target"])))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_path(source: str) -> Path:
    return (COMPOSE_FILE.parent / source).resolve()


def grafana_datasources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml")):
        data = load_yaml(path)
        assert data["apiVersion"] == 1, path
        out.extend(data.get("datasources", []))
    return out


def dashboards() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted((GRAFANA / "dashboards").rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict), path
        out.append((path, data))
    return out


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


# --------------------------------------------------------------------------------------------------


def test_stack_script_declares_every_port() -> None:
    assert set(stack_defaults()) == {
        "STACK_MQTT_PORT",
        "STACK_MQTTS_PORT",
        "STACK_INFLUX_PORT",
        "STACK_INFLUX_RPC_PORT",
        "STACK_PROM_PORT",
        "STACK_AM_PORT",
        "STACK_AGENT_PORT",
    }
    assert len(set(stack_defaults().values())) == 7


def test_every_service_is_known_and_uses_host_network() -> None:
    svcs = services()
    assert set(svcs) == set(SERVICE_PORT_KEYS)
    for name, svc in svcs.items():
        assert svc.get("network_mode") == "host", name
        assert "ports" not in svc, f"{name}: ports are meaningless with network_mode: host"


@pytest.mark.parametrize("name", sorted(SERVICE_PORT_KEYS))
def test_ports_match_the_local_stack(name: str) -> None:
    defaults = stack_defaults()
    svc = services()[name]
    allowed = {defaults[key] for key in SERVICE_PORT_KEYS[name]}
    if name == "grafana":
        allowed.add(GRAFANA_PORT)
    found = ports_in(svc)
    assert found <= allowed, f"{name}: ports {sorted(found - allowed)} are not the stack's"
    assert allowed <= found, f"{name}: never mentions {sorted(allowed - found)}"


def test_agent_environment_overrides_match_the_local_stack() -> None:
    defaults = stack_defaults()
    env = services()["agent"]["environment"]
    for key, template in AGENT_ENV_URLS.items():
        assert env[key] == template.format(**defaults), key


def test_agent_uses_tls_with_the_stack_ca() -> None:
    env = services()["agent"]["environment"]
    assert urlsplit(env["SENTINEL_MQTT__URL"]).scheme == "mqtts"
    assert env["SENTINEL_MQTT__CA_FILE"] == STACK_CA_FILE


def test_simulator_targets_the_stack_broker_over_tls() -> None:
    svc = services()["simulator"]
    command = svc["command"]
    mqtt_url = command[command.index("--mqtt") + 1]
    assert mqtt_url == f"mqtts://127.0.0.1:{stack_defaults()['STACK_MQTTS_PORT']}"
    # The simulator verifies the broker against the default CA bundle: the stack's CA here.
    assert svc["environment"]["SSL_CERT_FILE"] == STACK_CA_FILE
    password_file = PurePosixPath(command[command.index("--password-file") + 1])
    assert password_file.parent == PurePosixPath(STACK_MOUNT, "secrets")
    assert password_file.stem in stack_secret_names()


def test_broker_healthcheck_uses_the_tls_listener() -> None:
    test = " ".join(services()["mosquitto"]["healthcheck"]["test"])
    assert f"-p {stack_defaults()['STACK_MQTTS_PORT']}" in test
    assert f"--cafile {STACK_CA_FILE}" in test


def test_grafana_listens_on_loopback() -> None:
    env = services()["grafana"]["environment"]
    assert env["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert int(env["GF_SERVER_HTTP_PORT"]) == GRAFANA_PORT
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env, "admin password must come from a file"
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith(f"{STACK_MOUNT}/secrets/")


def test_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for source, _target in mounts(svc):
            if is_bind(source):
                path = host_path(source)
                assert path.exists(), f"{name}: bind mount {source} -> {path} does not exist"
                assert path.is_relative_to(REPO), f"{name}: {source} is outside the repository"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


@pytest.mark.parametrize("name", sorted(set(SERVICE_PORT_KEYS) - {"init"}))
def test_every_service_mounts_its_configuration(name: str) -> None:
    svc = services()[name]
    sources = [source for source, _ in mounts(svc)]
    config_sources = [
        s
        for s in sources
        if s == STACK_VOLUME
        or (is_bind(s) and host_path(s).is_relative_to(DEPLOY))
        or (is_bind(s) and host_path(s).is_relative_to(GRAFANA))
    ]
    assert config_sources, f"{name} mounts no config from deploy/, grafana/ or the stack volume"


def test_paths_in_the_stack_volume_are_rendered_by_the_stack_script() -> None:
    """/stack/<svc>/<file> comes from deploy/<svc>/<file>; /stack/secrets/<x>.password is a secret
    the script creates; /app/deploy/<file> is a file of deploy/ (mounted there)."""
    secret_names = stack_secret_names()
    script = STACK_SCRIPT.read_text(encoding="utf-8")
    text = text_of(compose())
    stack_paths = set(re.findall(r"/stack/[\w./-]+", text))
    assert stack_paths, "the compose file uses nothing from the rendered volume"
    for raw in stack_paths:
        rel = PurePosixPath(raw).relative_to(STACK_MOUNT)
        top = rel.parts[0]
        if top == "secrets":
            if rel.suffix == ".password":
                assert rel.stem in secret_names, raw
            else:
                assert f"secrets/{rel.parts[1]}" in script or rel.parts[1] in script, raw
        elif top == "tls":
            # Made by render_tls under $(tls_dir), not rendered from a template.
            assert len(rel.parts) == 2, raw
            assert re.search(rf'\$dir/{re.escape(rel.name)}"', script), raw
        elif len(rel.parts) == 2 and rel.suffix:
            assert (DEPLOY / rel).is_file(), f"{raw}: no template deploy/{rel}"
        else:
            assert (DEPLOY / top).is_dir(), raw
    for raw in set(re.findall(r"/app/deploy/[\w./-]+", text)):
        rel = PurePosixPath(raw).relative_to("/app/deploy")
        assert (DEPLOY / rel).exists(), f"{raw}: deploy/{rel} does not exist"


def test_one_shot_services_run_the_stack_script() -> None:
    svcs = services()
    for name, command in (("init", "render"), ("influx-init", "bootstrap")):
        svc = svcs[name]
        assert svc["entrypoint"] == ["/app/deploy/local/stack"], name
        assert svc["command"] == [command], name
        assert svc["environment"]["STACK_DIR"] == STACK_MOUNT, name
        assert (DEPLOY / "local" / "stack").is_file()
        assert f"    {command})" in STACK_SCRIPT.read_text(encoding="utf-8"), name


def test_dockerfile_targets_exist() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.MULTILINE | re.I))
    for name, svc in services().items():
        build = svc.get("build")
        if build is None:
            continue
        assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        ), name
        assert build["target"] in stages, name


def test_agent_config_file_uses_the_stack_ports() -> None:
    """deploy/sentinel.toml (the agent's config, another file's owner) targets the same ports."""
    path = DEPLOY / "sentinel.toml"
    if not path.exists():
        pytest.skip("deploy/sentinel.toml not written yet")
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    defaults = stack_defaults()
    expected = {
        ("mqtt", "url"): defaults["STACK_MQTTS_PORT"],
        ("influxdb", "url"): defaults["STACK_INFLUX_PORT"],
        ("alertmanager", "url"): defaults["STACK_AM_PORT"],
        ("http", "listen"): defaults["STACK_AGENT_PORT"],
    }
    for (section, key), port in expected.items():
        value = cfg.get(section, {}).get(key)
        if value is None:
            continue
        url = value if "://" in value else f"tcp://{value}"
        assert urlsplit(url).port == port, f"[{section}] {key} = {value!r}"
    secret_names = stack_secret_names()
    for section in ("mqtt", "influxdb"):
        password_file = cfg.get(section, {}).get("password_file")
        if password_file:
            assert Path(password_file).stem in secret_names, f"[{section}] password_file"
    # TLS to the broker, verified against the CA the stack makes (../.stack/tls/ca.crt).
    mqtt = cfg.get("mqtt", {})
    if "url" in mqtt:
        assert urlsplit(mqtt["url"]).scheme == "mqtts", "[mqtt] url must use TLS"
        ca_file = PurePosixPath(mqtt["ca_file"])
        assert ca_file.parts[-2:] == ("tls", "ca.crt"), "[mqtt] ca_file"
        assert ca_file.parent.parent == PurePosixPath("..", ".stack"), "[mqtt] ca_file"


# --- Grafana -------------------------------------------------------------------------------------


def grafana_mount_target(subdir: str) -> str:
    for source, target in mounts(services()["grafana"]):
        if is_bind(source) and host_path(source) == GRAFANA / subdir:
            return target
    raise AssertionError(f"grafana/{subdir} is not mounted into the grafana service")


def test_grafana_provisioning_is_mounted_where_grafana_reads_it() -> None:
    env = services()["grafana"]["environment"]
    assert grafana_mount_target("provisioning") == env["GF_PATHS_PROVISIONING"]


def test_grafana_datasources() -> None:
    sources = grafana_datasources()
    uids = [ds["uid"] for ds in sources]
    assert len(uids) == len(set(uids)), "duplicate data source uid"
    by_type = {ds["type"]: ds for ds in sources}
    assert set(by_type) == set(DATASOURCE_PORT_KEYS)
    defaults = stack_defaults()
    for type_, key in DATASOURCE_PORT_KEYS.items():
        url = urlsplit(by_type[type_]["url"])
        assert url.hostname == "127.0.0.1", type_
        assert url.port == defaults[key], f"{type_} data source port"
    influx = by_type["influxdb"]
    assert influx["jsonData"]["version"] == "InfluxQL"
    assert influx["jsonData"]["dbName"] == "sentinel"
    assert influx["user"] in {"sentinel-agent", "sentinel-grafana"}
    password = influx["secureJsonData"]["password"]
    match = re.fullmatch(r"\$__file\{/stack/secrets/([\w-]+)\.password\}", password)
    assert match, "the InfluxDB password must be read from a rendered secret file"
    assert match.group(1) in stack_secret_names()
    assert by_type["alertmanager"]["jsonData"]["implementation"] == "prometheus"
    assert sum(bool(ds.get("isDefault")) for ds in sources) == 1


def test_grafana_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    providers = []
    for path in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.y*ml")):
        data = load_yaml(path)
        assert data["apiVersion"] == 1, path
        providers.extend(data["providers"])
    assert providers
    target = grafana_mount_target("dashboards")
    for provider in providers:
        assert provider["type"] == "file"
        assert provider["options"]["path"] == target


def test_dashboards_parse_with_unique_uids_and_known_datasources() -> None:
    boards = dashboards()
    assert boards, "no dashboard in grafana/dashboards"
    uids = [board["uid"] for _, board in boards]
    assert all(isinstance(u, str) and 0 < len(u) <= 40 for u in uids)
    assert len(uids) == len(set(uids)), f"duplicate dashboard uid in {uids}"
    known = {ds["uid"]: ds["type"] for ds in grafana_datasources()}
    for path, board in boards:
        assert board.get("title"), path
        panels = list(all_panels(board.get("panels", [])))
        assert panels, path
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel id"
        for panel in panels:
            if panel.get("type") == "row":
                continue
            where = f"{path.name} panel {panel.get('title')!r}"
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), where
            refs = [panel["datasource"], *(t["datasource"] for t in panel.get("targets", []))]
            assert panel.get("targets"), where
            for ref in refs:
                assert ref["uid"] in known, f"{where}: unknown data source {ref}"
                assert ref["type"] == known[ref["uid"]], where


def test_pipeline_dashboard_has_the_starter_panels() -> None:
    board = json.loads((GRAFANA / "dashboards" / "sentinel-pipeline.json").read_text("utf-8"))
    queries = {
        t.get("expr") or t.get("query") for p in all_panels(board["panels"]) for t in p["targets"]
    }
    assert "rate(sentinel_messages_received_total[1m])" in queries
    assert "sum by (reason) (rate(sentinel_rejects_total[5m]))" in queries
    assert "sum by (detector, severity) (sentinel_alerts_total)" in queries
    assert any(q and "sentinel_influx_write_seconds_bucket" in q and "0.95" in q for q in queries)
    assert (
        'SELECT mean("upload_kbps") FROM "video" WHERE $timeFilter '
        'GROUP BY time($__interval), "device_id"'
    ) in queries


def scaleout_replicas() -> dict[str, dict[str, str]]:
    """Each agent replica's environment in the scale-out override, merged over the base agent's."""
    override = load_yaml(DEPLOY / "docker-compose.scaleout.yml")["services"]
    base = services()["agent"]["environment"]
    return {name: {**base, **svc["environment"]} for name, svc in override.items()}


def test_scaleout_replicas_share_the_fleet_without_overlap() -> None:
    from sentinel.config import Config  # noqa: PLC0415
    from simulators.geography import METROPOLE  # noqa: PLC0415

    replicas = scaleout_replicas()
    assert len(replicas) == 2
    tenants: list[str] = []
    for env in replicas.values():
        mqtt = Config(mqtt={"partition": json.loads(env["SENTINEL_MQTT__PARTITION"])}).mqtt
        assert all("zone" not in entry for entry in mqtt.partition)  # whole tenants here
        tenants += [entry["tenant"] for entry in mqtt.partition]
    assert sorted(tenants) == sorted({c.slug for c in METROPOLE})  # each tenant exactly once
    for key in ("SENTINEL_MQTT__CLIENT_ID", "SENTINEL_HTTP__LISTEN"):
        values = [env.get(key) for env in replicas.values()]
        assert len(set(values)) == len(values), key
    override = load_yaml(DEPLOY / "docker-compose.scaleout.yml")
    state = [
        v for v in override["services"]["agent-1"]["volumes"] if v.endswith(":/var/lib/sentinel")
    ]
    assert state == ["agent-1-state:/var/lib/sentinel"]  # its own checkpoint, spool and state
