"""The `sentinel` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sentinel.config import Config, load_config
from sentinel.errors import ConfigError
from sentinel.traffic.cli import app as pcap_app

app = typer.Typer(
    help="Sentinel: security monitoring for a territory's connected devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(pcap_app, name="pcap", help="Analyse MQTT and network traffic in capture files.")

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Agent configuration (TOML).", envvar="SENTINEL_CONFIG"),
]


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"sentinel: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(config: ConfigOption = Path("deploy/sentinel.toml")) -> None:
    """Run the agent: subscribe, validate, store, detect, alert."""
    from sentinel import logs  # noqa: PLC0415 - keep `sentinel --help` fast
    from sentinel.agent import Agent  # noqa: PLC0415
    from sentinel.runtime import run_until_signal  # noqa: PLC0415

    cfg = _load(config)
    logs.configure(cfg.log.level, cfg.log.json_format)
    agent = Agent(cfg)
    run_until_signal(agent.run(), agent.request_stop)


@app.command("check-config")
def check_config(config: ConfigOption = Path("deploy/sentinel.toml")) -> None:
    """Validate a configuration file and print its detectors."""
    cfg = _load(config)
    typer.echo(f"{config}: valid")
    for det in cfg.detectors:
        state = "enabled" if det.enabled else "disabled"
        typer.echo(f"  detector {det.name} ({det.type}, {det.severity}, {state}) on {det.kinds}")


@app.command()
def sim(
    devices: Annotated[int, typer.Option(min=0, help="Simulated devices.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same messages.")] = 0,
    speed: Annotated[
        float, typer.Option(min=0.01, help="Simulated seconds per real second.")
    ] = 1.0,
    duration: Annotated[float, typer.Option(min=0, help="Real seconds to run.")] = 600.0,
    mqtt: Annotated[
        str | None, typer.Option(help="Broker URL, e.g. mqtt://127.0.0.1:18830; none: dry run.")
    ] = None,
    username: Annotated[str, typer.Option(help="MQTT user.")] = "sentinel-sim",
    password_file: Annotated[
        Path | None,
        typer.Option(help="File holding the MQTT password (or env SENTINEL_SIM_PASSWORD)."),
    ] = None,
    inventory: Annotated[Path | None, typer.Option(help="Write the device inventory here.")] = None,
    truth: Annotated[Path | None, typer.Option(help="Write the ground truth (JSONL) here.")] = None,
    anomaly_at: Annotated[
        float | None,
        typer.Option(help="Inject a camera upload surge this many simulated seconds in."),
    ] = None,
    anomaly_for: Annotated[float, typer.Option(help="Its length, simulated seconds.")] = 600.0,
    anomaly_device: Annotated[
        str | None, typer.Option(help="The camera to use (default: the first).")
    ] = None,
    anomaly_factor: Annotated[float, typer.Option(help="Upload multiplier.")] = 10.0,
) -> None:
    """Simulate a fleet of Lyon's street lights, mobility sensors and cameras.

    The simulated span (duration × speed) ends at the current time, so that the agent accepts
    every timestamp; publishing is paced to take about `duration` real seconds.
    """
    import asyncio  # noqa: PLC0415
    import os  # noqa: PLC0415

    from simulators.anomalies import AnomalySpec  # noqa: PLC0415
    from simulators.runner import SimulationConfig, run_simulation  # noqa: PLC0415

    secret = os.environ.get("SENTINEL_SIM_PASSWORD")
    if password_file is not None:
        secret = password_file.read_text(encoding="utf-8").strip()
    anomalies: tuple[AnomalySpec, ...] = ()
    if anomaly_at is not None:
        anomalies = (AnomalySpec(anomaly_device, anomaly_at, anomaly_for, anomaly_factor),)
    cfg = SimulationConfig(
        devices=devices,
        seed=seed,
        speed=speed,
        duration_s=duration,
        mqtt_url=mqtt,
        username=username,
        password=secret,
        inventory_path=inventory,
        truth_path=truth,
        anomalies=anomalies,
    )
    summary = asyncio.run(run_simulation(cfg))
    typer.echo(
        f"{summary.messages:,} messages from {summary.devices:,} devices"
        + (" (dry run: nothing published)" if mqtt is None else f" published to {mqtt}")
    )
    for t in summary.ground_truth:
        typer.echo(f"anomaly: {t.to_json()}")


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=3, help="Simulated devices.")] = 300,
    speed: Annotated[float, typer.Option(min=1, help="Simulated seconds per real second.")] = 20.0,
    duration: Annotated[float, typer.Option(min=10, help="Real seconds to run.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated fleet.")] = 7,
    stack: Annotated[bool, typer.Option(help="Use the real local stack when possible.")] = True,
    config: ConfigOption = Path("deploy/sentinel.toml"),
) -> None:
    """A simulated district under attack, the agent, and the alerts it raises."""
    from sentinel.demo import DemoOptions, run_demo  # noqa: PLC0415

    _load(config)  # fail fast, with the key named, before starting anything
    opts = DemoOptions(devices, seed, speed, duration, config, stack)
    raise typer.Exit(run_demo(opts))


if __name__ == "__main__":
    app()
