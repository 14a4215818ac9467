"""`sentinel alerts|incidents|suppress|suggestions|detectors|reload`: the operator's commands.

They talk to the running agent's API (address and token from the config's [http] section), so
every change is checked, applied and audited in one place. `detectors list|show` fall back to
the config file and the checkpoint when the agent is not running.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from sentinel.config import Config, load_config
from sentinel.errors import ConfigError

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Agent configuration (TOML).", envvar="SENTINEL_CONFIG"),
]
AuthorOption = Annotated[
    str, typer.Option("--author", help="Who does this (kept in the audit trail).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
DEFAULT_CONFIG = Path("deploy/sentinel.toml")

alerts_app = typer.Typer(help="Alerts: list, and mark as true/false positive or benign.")
incidents_app = typer.Typer(help="Incidents: alerts grouped by cause and zone.")
suppress_app = typer.Typer(help="Suppressions and maintenance windows.")
suggestions_app = typer.Typer(help="Suggestions from feedback: list, accept, reject.")
detectors_app = typer.Typer(help="Configured detectors, their parameters and state.")


class AgentUnreachable(Exception):
    pass


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"sentinel: {exc}", err=True)
        raise typer.Exit(2) from None


def call(cfg: Config, method: str, path: str, body: object = None) -> Any:
    """One API call; exits 1 with the agent's error message when it refuses."""
    url = f"http://{cfg.http.listen}{path}"
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    token = cfg.http.secret()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        # The URL is http://<[http] listen>, validated as host:port by the config.
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = orjson.loads(exc.read())
        except orjson.JSONDecodeError:
            detail = {"error": exc.reason}
        problems = detail.get("problems") or [detail.get("error", exc.reason)]
        typer.echo(f"sentinel: the agent refused ({exc.code}):", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        raise AgentUnreachable(f"no agent at {url}: {exc}") from None


def _call_or_exit(cfg: Config, method: str, path: str, body: object = None) -> Any:
    try:
        return call(cfg, method, path, body)
    except AgentUnreachable as exc:
        typer.echo(f"sentinel: {exc}", err=True)
        raise typer.Exit(1) from None


def _print(data: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        typer.echo("\n".join(lines) if lines else "(none)")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise typer.BadParameter(f"{text!r}: a duration such as 90m, 2h or 7d") from None


@alerts_app.command("list")
def alerts_list(
    config: ConfigOption = DEFAULT_CONFIG, recent: int = 0, as_json: JsonOption = False
) -> None:
    """Active alerts (and the last RECENT changes with --recent N)."""
    data = _call_or_exit(_config(config), "GET", f"/api/alerts?recent={recent}")
    items = data["active"] + data.get("recent", [])
    lines = [
        f"{a['fingerprint']}  {a['state']:<10} {a['labels']['severity']:<8} "
        f"{a['labels']['detector']:<24} {a['labels']['tenant']}/{a['labels']['zone']}/"
        f"{a['labels']['device_id']}  {_when(a['starts_at'])}  incident {a['incident'] or '-'}"
        for a in items
    ]
    _print(data, as_json, lines)


@alerts_app.command("mark")
def alerts_mark(
    target: Annotated[str, typer.Argument(help="Alert fingerprint or incident id.")],
    verdict: Annotated[str, typer.Option(help="tp, fp or benign.")],
    author: AuthorOption,
    note: Annotated[str, typer.Option(help="Why.")] = "",
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Mark an alert or incident true positive, false positive or benign."""
    body = {"target": target, "verdict": verdict, "author": author, "note": note}
    data = _call_or_exit(_config(config), "POST", "/api/feedback", body)
    lines = [f"recorded {verdict} on {target}"] + [
        f"suggestion {s['id']} ({s['kind']}): {s['detail']}" for s in data["suggestions"]
    ]
    _print(data, as_json, lines)


@incidents_app.command("list")
def incidents_list(
    config: ConfigOption = DEFAULT_CONFIG,
    show_all: Annotated[bool, typer.Option("--all", help="Closed ones too.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Open incidents (with --all, the recently closed too)."""
    state = "all" if show_all else "open"
    data = _call_or_exit(_config(config), "GET", f"/api/incidents?state={state}")
    lines = [
        f"{i['id']}  {i['state']:<6} {i['severity']:<8} {i['summary']}  "
        f"(notified {i['notified']}, rolled up {i['rolled_up']})"
        for i in data["incidents"]
    ]
    _print(data, as_json, lines)


@suppress_app.command("add")
def suppress_add(
    match: Annotated[
        list[str], typer.Option("--match", help="label=value (value may end in *); repeatable.")
    ],
    reason: Annotated[str, typer.Option(help="Why (kept with it).")],
    author: AuthorOption,
    duration: Annotated[str, typer.Option("--for", help="How long: 90m, 2h, 7d.")],
    starts: Annotated[str | None, typer.Option(help="Start (RFC 3339); default now.")] = None,
    maintenance: Annotated[bool, typer.Option(help="A maintenance window.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Mute alerts matching labels for a while (every suppression expires)."""
    matchers = {}
    for item in match:
        label, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--match {item!r}: expected label=value")
        matchers[label] = value
    body: dict[str, Any] = {
        "matchers": matchers,
        "duration_s": _duration(duration),
        "author": author,
        "reason": reason,
        "kind": "maintenance" if maintenance else "suppression",
    }
    if starts is not None:
        body["starts_at"] = starts
    data = _call_or_exit(_config(config), "POST", "/api/suppressions", body)
    s = data["suppression"]
    _print(data, as_json, [f"{s['id']}: {s['matchers']} until {_when(s['ends_at'])}"])


@suppress_app.command("list")
def suppress_list(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Current suppressions and maintenance windows."""
    data = _call_or_exit(_config(config), "GET", "/api/suppressions")
    lines = [
        f"{s['id']}  {s['kind']:<11} {s['matchers']}  {_when(s['starts_at'])} → "
        f"{_when(s['ends_at'])}  by {s['author']}: {s['reason']}"
        for s in data["suppressions"]
    ]
    _print(data, as_json, lines)


@suppress_app.command("remove")
def suppress_remove(
    suppression_id: Annotated[str, typer.Argument(help="The suppression's id.")],
    author: AuthorOption,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """End a suppression now."""
    cfg = _config(config)
    query = urllib.parse.urlencode({"author": author})
    _call_or_exit(cfg, "DELETE", f"/api/suppressions/{suppression_id}?{query}")
    typer.echo(f"removed {suppression_id}")


@suggestions_app.command("list")
def suggestions_list(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Suggestions made from feedback, with their state."""
    data = _call_or_exit(_config(config), "GET", "/api/suggestions")
    lines = [
        f"{s['id']}  {s['state']:<8} {s['kind']:<9} {s['detail']}" for s in data["suggestions"]
    ]
    _print(data, as_json, lines)


def _decide(suggestion_id: str, author: str, config: Path, verb: str) -> None:
    path = f"/api/suggestions/{suggestion_id}/{verb}"
    data = _call_or_exit(_config(config), "POST", path, {"author": author})
    s = data["suggestion"]
    typer.echo(f"{s['id']}: {s['state']}")
    if s["kind"] == "threshold" and s["state"] == "accepted":
        typer.echo(f"apply it in the config file, then `sentinel reload`: {s['detail']}")


@suggestions_app.command("accept")
def suggestions_accept(
    suggestion_id: str, author: AuthorOption, config: ConfigOption = DEFAULT_CONFIG
) -> None:
    """Accept a suggestion (a suppress suggestion becomes a suppression)."""
    _decide(suggestion_id, author, config, "accept")


@suggestions_app.command("reject")
def suggestions_reject(
    suggestion_id: str, author: AuthorOption, config: ConfigOption = DEFAULT_CONFIG
) -> None:
    """Reject a suggestion."""
    _decide(suggestion_id, author, config, "reject")


def _offline_detectors(cfg: Config) -> list[dict[str, Any]]:
    return [
        {
            "name": d.name,
            "type": d.type,
            "severity": d.severity,
            "mode": d.mode if d.enabled else "disabled",
            "kinds": list(d.kinds),
            "params": d.parsed_params().model_dump(mode="json"),
            "tracked_devices": None,
        }
        for d in cfg.detectors
    ]


def _detectors(cfg: Config) -> tuple[list[dict[str, Any]], str]:
    try:
        return call(cfg, "GET", "/api/detectors")["detectors"], "the running agent"
    except AgentUnreachable:
        return _offline_detectors(cfg), "the config file (the agent is not running)"


@detectors_app.command("list")
def detectors_list(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Detectors with their type, mode and tracked devices."""
    items, source = _detectors(_config(config))
    lines = [f"from {source}:"] + [
        f"  {d['name']:<28} {d['type']:<10} {d['mode']:<8} {d['severity']:<8} "
        f"kinds={','.join(d['kinds'])} devices={d['tracked_devices']}"
        for d in items
    ]
    _print(items, as_json, lines)


@detectors_app.command("show")
def detectors_show(
    name: str, config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False
) -> None:
    """One detector's parameters and current state (from the agent, else the checkpoint)."""
    cfg = _config(config)
    try:
        found = call(cfg, "GET", f"/api/detectors/{name}")["detector"]
    except AgentUnreachable:
        found = next((d for d in _offline_detectors(cfg) if d["name"] == name), None)
        if found is None:
            typer.echo(f"sentinel: no detector named {name!r} in {config}", err=True)
            raise typer.Exit(1) from None
        found["state"] = _checkpointed_state(cfg, name)
    state = found.get("state")
    lines = [f"{k}: {v}" for k, v in found.items() if k != "state"]
    if state is None:
        lines.append("state: (none saved, or too large to show: use --json on the agent API)")
    else:
        lines.append("state: " + json.dumps(state, sort_keys=True)[:4000])
    _print(found, as_json, lines)


def _checkpointed_state(cfg: Config, name: str) -> Any:
    path = cfg.checkpoint.path
    if path is None or not path.exists():
        return None
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    entry = doc.get("detectors", {}).get(name) if isinstance(doc, dict) else None
    return entry.get("state") if isinstance(entry, dict) else None


def reload_command(config: ConfigOption = DEFAULT_CONFIG, author: AuthorOption = "cli") -> None:
    """Ask the running agent to re-read its config file (same as SIGHUP)."""
    data = _call_or_exit(_config(config), "POST", "/api/reload", {"author": author})
    typer.echo("reloaded: " + ", ".join(f"{k} {v}" for k, v in data.items() if k != "ok" and v))


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(incidents_app, name="incidents")
    app.add_typer(suppress_app, name="suppress")
    app.add_typer(suggestions_app, name="suggestions")
    app.add_typer(detectors_app, name="detectors")
    app.command("reload")(reload_command)
