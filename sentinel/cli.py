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


if __name__ == "__main__":
    app()
