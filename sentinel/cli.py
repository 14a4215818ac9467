"""The `sentinel` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchmarks.nab.cli import app as bench_app
from sentinel import operator_cli
from sentinel.backtest_cli import backtest as backtest_command
from sentinel.config import Config, load_config
from sentinel.errors import ConfigError
from sentinel.learning.cli import train as train_command
from sentinel.traffic.cli import InventoryOption, JsonLinesOption, TrafficConfigOption
from sentinel.traffic.cli import app as pcap_app

app = typer.Typer(
    help="Sentinel: security monitoring for a territory's connected devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(pcap_app, name="pcap", help="Analyse MQTT and network traffic in capture files.")
app.add_typer(bench_app, name="bench", help="Benchmarks: NAB (Numenta Anomaly Benchmark).")
operator_cli.register(app)
app.command("backtest")(backtest_command)
app.command("train")(train_command)

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
    agent = Agent(cfg, config_path=config)
    run_until_signal(agent.run(), agent.request_stop, lambda: agent.reload("SIGHUP"))


@app.command("partition-plan")
def partition_plan(
    inventory: Annotated[
        Path, typer.Option(help="Fleet inventory (JSON list, `sim --inventory`).")
    ],
    replicas: Annotated[int, typer.Option(min=1, help="Agent replicas.")] = 2,
) -> None:
    """Spread the fleet's zones over agent replicas: prints each one's [mqtt] partition."""
    import orjson  # noqa: PLC0415

    from sentinel import partition  # noqa: PLC0415

    sizes: dict[tuple[str, str], int] = {}
    for device in orjson.loads(inventory.read_bytes()):
        key = (device["tenant"], device["zone"])
        sizes[key] = sizes.get(key, 0) + 1
    typer.echo(partition.toml_for(partition.plan(sizes, replicas)))


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
def capture(
    iface: Annotated[str, typer.Option("--iface", help="Network interface, e.g. eth0 or lo.")],
    bpf: Annotated[str, typer.Option("--bpf", help="libpcap filter, e.g. 'tcp port 1883'.")] = "",
    inventory: InventoryOption = None,
    json_lines: JsonLinesOption = False,
    config: TrafficConfigOption = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
    agent: Annotated[
        bool, typer.Option("--agent", help="Also feed the running agent (its API, its token).")
    ] = False,
) -> None:
    """Analyze live traffic (needs CAP_NET_RAW): MQTT attacks and flows, alerts as they open."""
    from sentinel.traffic.cli import run_capture  # noqa: PLC0415 - keep `sentinel --help` fast

    raise typer.Exit(run_capture(iface, bpf, inventory, json_lines, config, duration, agent))


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


def _secret(path: Path | None, env: str) -> str | None:
    import os  # noqa: PLC0415

    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get(env)


def _speed(text: str) -> float:
    import math  # noqa: PLC0415

    if text.strip().lower() in ("max", "inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: a number > 0, or max") from None
    if not (value > 0 and math.isfinite(value)):
        raise typer.BadParameter(f"{text!r}: a number > 0, or max")
    return value


@app.command()
def record(
    mqtt: Annotated[str, typer.Option(help="Broker URL, e.g. mqtt://127.0.0.1:18830.")],
    out: Annotated[Path, typer.Option(help="Recording to write (.gz, or .zst with zstandard).")],
    topic: Annotated[
        list[str] | None, typer.Option(help="Topic filter (repeatable). Default: fleet/#.")
    ] = None,
    username: Annotated[str | None, typer.Option(help="MQTT user.")] = "sentinel-operator",
    password_file: Annotated[
        Path | None,
        typer.Option(help="File holding the MQTT password (or env SENTINEL_RECORD_PASSWORD)."),
    ] = None,
    client_id: Annotated[str, typer.Option(help="MQTT client id.")] = "sentinel-recorder",
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds.")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many messages.")] = None,
) -> None:
    """Record an MQTT stream (a live fleet, the simulator) to a compressed file, with timestamps.

    Stops on Ctrl-C or SIGTERM, after --duration seconds or --count messages.
    """
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    from sentinel.record import Recorder, RecordError  # noqa: PLC0415

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    recorder = Recorder(
        mqtt,
        out,
        topic or ["fleet/#"],
        username=username,
        password=_secret(password_file, "SENTINEL_RECORD_PASSWORD"),
        client_id=client_id,
    )
    try:
        recorder.start()
    except RecordError as exc:
        typer.echo(f"sentinel: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"recording {', '.join(topic or ['fleet/#'])} from {mqtt} to {out}", err=True)
    deadline = None if duration is None else time.monotonic() + duration
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            break
        if count is not None and recorder.messages >= count:
            break
    stats = recorder.stop()
    typer.echo(f"{stats.messages:,} messages in {stats.elapsed_s:.1f} s written to {stats.path}")


@app.command()
def replay(
    file: Annotated[
        Path, typer.Argument(help="A recording (sentinel record, scenario run --out).")
    ],
    mqtt: Annotated[str, typer.Option(help="Broker URL, e.g. mqtt://127.0.0.1:18830.")],
    speed: Annotated[
        str, typer.Option(help="Recorded seconds per real second, or max (as fast as possible).")
    ] = "1",
    username: Annotated[str | None, typer.Option(help="MQTT user.")] = "sentinel-sim",
    password_file: Annotated[
        Path | None,
        typer.Option(help="File holding the MQTT password (or env SENTINEL_SIM_PASSWORD)."),
    ] = None,
    client_id: Annotated[str, typer.Option(help="MQTT client id.")] = "sentinel-replay",
) -> None:
    """Republish a recording, each device's messages in their recorded order.

    Payload timestamps are replayed as recorded: the agent rejects those more than
    `validation.max_past_s` old (7 days by default).
    """
    import asyncio  # noqa: PLC0415

    from sentinel.replay import replay as do_replay  # noqa: PLC0415
    from simulators.publisher import PublishError  # noqa: PLC0415
    from simulators.recordfile import RecordingError  # noqa: PLC0415

    try:
        stats = asyncio.run(
            do_replay(
                file,
                mqtt_url=mqtt,
                username=username,
                password=_secret(password_file, "SENTINEL_SIM_PASSWORD"),
                client_id=client_id,
                speed=_speed(speed),
            )
        )
    except (RecordingError, PublishError) as exc:
        typer.echo(f"sentinel: {exc}", err=True)
        raise typer.Exit(1) from None
    p = stats.publish
    typer.echo(
        f"{p.published:,} messages replayed to {mqtt} in {p.elapsed_s:.1f} s "
        f"({p.acked:,} acked, {p.errors} refused by the client)"
        + (f"; {stats.skipped_events:,} broker events skipped" if stats.skipped_events else "")
    )


scenario_app = typer.Typer(
    help="The attack scenario library: list, simulate to a file or a broker."
)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("list")
def scenario_list() -> None:
    """The scenarios shipped in simulators/scenarios/."""
    from simulators.scenario import library, load_scenario  # noqa: PLC0415

    for name in library():
        sc = load_scenario(name)
        kinds = ", ".join(sorted({f"{e.kind} ({e.label})" for e in sc.events}))
        typer.echo(f"{name:28} {kinds}\n{'':28} {sc.summary}")


@scenario_app.command("run")
def scenario_run(
    scenario: Annotated[str, typer.Argument(help="A library name or a TOML file.")],
    devices: Annotated[
        int | None, typer.Option(min=1, help="Fleet size (default: the file's).")
    ] = None,
    days: Annotated[float | None, typer.Option(min=0.001, help="Simulated days.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: the file's).")] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Start: ISO date-time, or 'now' (the span then ends now). "
            "Default: the file's start, or 'now' with --mqtt."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the stream to this recording.")] = None,
    truth: Annotated[Path | None, typer.Option(help="Write the ground truth (JSONL).")] = None,
    inventory: Annotated[Path | None, typer.Option(help="Write the device inventory.")] = None,
    mqtt: Annotated[str | None, typer.Option(help="Publish live to this broker.")] = None,
    speed: Annotated[
        str, typer.Option(help="With --mqtt: simulated seconds per second, or max.")
    ] = "60",
    username: Annotated[str, typer.Option(help="Gateway MQTT user.")] = "sentinel-sim",
    password_file: Annotated[Path | None, typer.Option(help="Gateway password file.")] = None,
    secrets_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder of mqtt-<user>.password files (the stack's .stack/secrets): "
            "gateway, operator and field-device logins for the MQTT-layer attacks."
        ),
    ] = None,
    device_user: Annotated[
        str, typer.Option(help="Field device login used by reconnaissance and clone.")
    ] = "probe-dev-1",
    topic_prefix: Annotated[str, typer.Option(help="Topic root.")] = "fleet",
) -> None:
    """Simulate a scenario to a recording file (no broker), or live against a broker, where
    real MQTT clients carry out its MQTT-layer attacks."""
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415
    from datetime import datetime  # noqa: PLC0415

    from simulators.broker_actions import BrokerCredentials, Login  # noqa: PLC0415
    from simulators.scenario import ScenarioError, load_scenario  # noqa: PLC0415
    from simulators.scenario_run import prepare, run_live, write_recording  # noqa: PLC0415

    if (out is None) == (mqtt is None):
        typer.echo("sentinel: give exactly one of --out FILE or --mqtt URL", err=True)
        raise typer.Exit(2)
    try:
        sc = load_scenario(scenario)
    except ScenarioError as exc:
        typer.echo(f"sentinel: {exc}", err=True)
        raise typer.Exit(2) from None
    span = (days if days is not None else sc.run.days) * 86_400.0
    when = start or ("now" if mqtt else None)
    t0 = None
    if when == "now":
        t0 = time.time() - span
    elif when is not None:
        t0 = datetime.fromisoformat(when).timestamp()
    run = prepare(sc, devices=devices, days=days, seed=seed, start=t0, topic_prefix=topic_prefix)
    for why in run.compiled.skipped:
        typer.echo(f"skipped {why}", err=True)
    if truth is not None:
        run.write_truth(truth)
    if out is not None:
        if inventory is not None:
            from simulators.inventory import write_inventory  # noqa: PLC0415

            write_inventory(run.fleet, inventory)
        summary = write_recording(run, out)
        typer.echo(
            f"{summary.messages:,} messages and {summary.events:,} broker events from "
            f"{len(run.fleet):,} devices written to {out}"
        )
    else:
        assert mqtt is not None

        def login(user: str, path: Path | None) -> Login | None:
            if path is not None and path.exists():
                return Login(user, path.read_text(encoding="utf-8").strip())
            return None

        sd = secrets_dir
        gateway = login(username, password_file or (sd / "mqtt-sim.password" if sd else None))
        creds = BrokerCredentials(
            gateway=gateway,
            operator=login("sentinel-operator", sd / "mqtt-operator.password" if sd else None),
            device=login(device_user, sd / f"mqtt-{device_user}.password" if sd else None),
        )
        live = asyncio.run(
            run_live(
                run,
                mqtt_url=mqtt,
                creds=creds,
                client_id=f"sentinel-scenario-{sc.name}",
                speed=_speed(speed),
                inventory=inventory,
            )
        )
        typer.echo(f"{live.publish.published:,} messages published to {mqtt}")
        for what, n in sorted(live.actions.counts.items()):
            typer.echo(f"broker action {what}: {n}")
        for err in live.actions.errors[:10]:
            typer.echo(f"broker action error: {err}", err=True)
    for t in run.truth:
        typer.echo(f"truth: {t.to_json()}")


@app.command("eval")
def eval_(
    scenario: Annotated[
        list[str] | None,
        typer.Option(help="Library name, TOML file, or all (repeatable)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: each file's).")] = None,
    devices: Annotated[
        int | None, typer.Option(min=1, help="Fleet size (default: each file's).")
    ] = None,
    days: Annotated[float | None, typer.Option(min=0.001, max=7, help="Simulated days.")] = None,
    config: ConfigOption = Path("deploy/sentinel.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON document.")] = False,
    html: Annotated[Path | None, typer.Option(help="Write an HTML report with timelines.")] = None,
    grace: Annotated[float, typer.Option(min=0, help="Grace period after an event, s.")] = 300.0,
    workers: Annotated[int, typer.Option(min=1, help="Processes per run (split by tenant).")] = 1,
    recording: Annotated[
        Path | None, typer.Option(help="Score a recording instead of simulating (needs --truth).")
    ] = None,
    truth: Annotated[Path | None, typer.Option(help="Ground truth (JSONL) of --recording.")] = None,
    wire: Annotated[
        bool,
        typer.Option(
            help="Write and decode every simulated report (slower; by default plain reports "
            "reach the pipeline as the Records the decoder would make of them)."
        ),
    ] = False,
) -> None:
    """Run scenarios through the agent's pipeline in simulated time; score alerts against truth.

    An alert matches an event when its device (or, for a traffic alert without one, a device id
    it names) is one of the event's and it starts between the event's start and --grace seconds
    after its end (docs/scenarios.md).
    """
    import sys  # noqa: PLC0415

    import orjson  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TimeElapsedColumn,
    )

    from sentinel import logs  # noqa: PLC0415
    from sentinel.evaluation.report import document, html_report, print_report  # noqa: PLC0415
    from sentinel.evaluation.runner import (  # noqa: PLC0415
        RunResult,
        expected_messages,
        run_recording,
        run_scenario,
    )
    from sentinel.evaluation.scoring import score  # noqa: PLC0415
    from simulators.anomalies import read_truth  # noqa: PLC0415
    from simulators.scenario import ScenarioError, library, load_scenario  # noqa: PLC0415
    from simulators.scenario_run import prepare  # noqa: PLC0415

    cfg = _load(config)
    logs.configure("warning", json_format=False)  # rejects are counted in the report
    console = Console(stderr=as_json, width=None if sys.stdout.isatty() else 150)
    runs: list[RunResult] = []
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    if recording is not None:
        if truth is None:
            typer.echo("sentinel: --recording needs --truth", err=True)
            raise typer.Exit(2)
        with progress:
            task = progress.add_task(recording.name, total=None)
            runs.append(
                run_recording(
                    recording, read_truth(truth), cfg, lambda n: progress.update(task, completed=n)
                )
            )
    else:
        names: list[str] = []
        for s in scenario or ["all"]:
            names += library() if s == "all" else [s]
        try:
            scenarios = [load_scenario(n) for n in names]
        except ScenarioError as exc:
            typer.echo(f"sentinel: {exc}", err=True)
            raise typer.Exit(2) from None
        with progress:
            for sc in scenarios:
                probe = prepare(sc, devices=devices, days=days, seed=seed)
                total = expected_messages(probe.fleet, probe.end - probe.start)
                task = progress.add_task(sc.name, total=total)

                def advance(n: int, task: TaskID = task) -> None:
                    progress.update(task, completed=n)

                runs.append(
                    run_scenario(
                        sc,
                        cfg,
                        devices=devices,
                        days=days,
                        seed=seed,
                        workers=workers,
                        progress=advance,
                        wire=wire,
                    )
                )
                progress.update(task, completed=total)
    result = score([r.outcome() for r in runs], grace_s=grace)
    options = {
        "config": str(config),
        "scenarios": [r.name for r in runs],
        "devices": devices,
        "days": days,
        "seed": seed,
        "grace_s": grace,
        "workers": workers,
        "wire": wire,
    }
    if as_json:
        sys.stdout.write(
            orjson.dumps(document(runs, result, options), option=orjson.OPT_INDENT_2).decode()
            + "\n"
        )
    else:
        print_report(console, runs, result)
    if html is not None:
        html.write_text(html_report(runs, result, options), encoding="utf-8")
        console.print(f"HTML report: {html}")


if __name__ == "__main__":
    app()
