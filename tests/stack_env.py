"""Helpers for tests that use the local stack started by ``deploy/local/stack up``.

A plain module (not a conftest) so any test can ``from tests.stack_env import ...``.

The stack writes ``$STACK_DIR/stack.env`` (``KEY=VALUE`` lines) and keeps its secrets in
``$STACK_DIR/secrets/<name>.password``. ``STACK_DIR`` defaults to ``<repo>/.stack``.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO_ROOT / "deploy" / "local" / "stack"

#: Services of the stack and the stack.env key of the URL each one listens on.
SERVICE_URL_KEYS = {
    "mosquitto": "STACK_MQTT_URL",
    "influxdb": "STACK_INFLUX_URL",
    "prometheus": "STACK_PROM_URL",
    "alertmanager": "STACK_AM_URL",
}


def stack_dir() -> Path:
    """The stack's folder: ``$STACK_DIR`` or ``<repo>/.stack``."""
    return Path(os.environ.get("STACK_DIR") or REPO_ROOT / ".stack")


def load_stack_env() -> dict[str, str] | None:
    """Parse ``$STACK_DIR/stack.env``; ``None`` when the stack was never brought up (or rendered).

    The file stays after ``stack down``: use :func:`require_stack` to know the services run.
    """
    path = stack_dir() / "stack.env"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip()
    return env


def secret(name: str) -> str:
    """The secret ``$STACK_DIR/secrets/<name>.password``, e.g. ``secret("mqtt-agent")``."""
    env = load_stack_env() or {}
    secrets_dir = Path(env.get("STACK_SECRETS_DIR") or stack_dir() / "secrets")
    return (secrets_dir / f"{name}.password").read_text(encoding="utf-8").strip()


def host_port(url: str) -> tuple[str, int]:
    """``("127.0.0.1", 18830)`` from ``mqtt://127.0.0.1:18830``."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"no host:port in {url!r}")
    return parts.hostname, parts.port


def _listening(url: str) -> bool:
    try:
        with socket.create_connection(host_port(url), timeout=1.0):
            return True
    except OSError:
        return False


def require_stack(*services: str) -> dict[str, str]:
    """The stack.env of a running stack, else skip the test (or fail it if ``STACK_REQUIRED=1``).

    ``services`` names the services the test needs (default: all four); each must accept TCP
    connections on its URL.
    """
    wanted = services or tuple(SERVICE_URL_KEYS)
    env = load_stack_env()
    problem: str | None = None
    if env is None:
        problem = f"no {stack_dir() / 'stack.env'}"
    else:
        down = [s for s in wanted if not _listening(env[SERVICE_URL_KEYS[s]])]
        if down:
            problem = f"not listening: {', '.join(down)} (stack in {stack_dir()})"
    if problem is None:
        assert env is not None
        return env
    reason = f"local stack not up ({problem}); run deploy/local/stack up"
    if os.environ.get("STACK_REQUIRED") == "1":
        pytest.fail(f"STACK_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def service_pid(name: str) -> int:
    """The pid the stack script recorded for one of its services."""
    return int((stack_dir() / "run" / f"{name}.pid").read_text().strip())


def stop_service(name: str, timeout_s: float = 30.0) -> None:
    """Stop one service of the running stack (SIGTERM to the pid it recorded), and wait."""
    pid = service_pid(name)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} (pid {pid}) did not stop within {timeout_s} s")


def start_stack() -> None:
    """`deploy/local/stack up`: starts whatever is not running, waits until it answers."""
    subprocess.run([str(STACK_SCRIPT), "up"], check=True, capture_output=True, timeout=300)


def mqtt_tls_context(env: dict[str, str]) -> ssl.SSLContext:
    """A client TLS context that trusts the stack's CA (``STACK_CA_FILE``) and checks the name.

    For ``STACK_MQTTS_URL`` (``mqtts://127.0.0.1:18883``): the broker's certificate names
    ``127.0.0.1``, ``::1`` and ``localhost``.
    """
    return ssl.create_default_context(cafile=env["STACK_CA_FILE"])
