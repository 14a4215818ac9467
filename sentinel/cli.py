"""The `sentinel` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sentinel.config import Config, load_config
from sentinel.errors import ConfigError

app = typer.Typer(
    help="Sentinel: security monitoring for a territory's connected devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

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
    run_until_signal(Agent(cfg).run())


@app.command("check-config")
def check_config(config: ConfigOption = Path("deploy/sentinel.toml")) -> None:
    """Validate a configuration file and print its detectors."""
    cfg = _load(config)
    typer.echo(f"{config}: valid")
    for det in cfg.detectors:
        state = "enabled" if det.enabled else "disabled"
        typer.echo(f"  detector {det.name} ({det.type}, {det.severity}, {state}) on {det.kinds}")


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
