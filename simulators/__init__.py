"""Simulated city fleets with labelled anomalies.

Entry points: `fleet.build_fleet`, `generator.generate`, `anomalies.AnomalySpec`,
`inventory.write_inventory` / `load_inventory`, `publisher.publish`, `runner.run_simulation`;
scenarios as data: `scenario.load_scenario` / `compile_scenario` (files in `scenarios/`),
`scenario_run.prepare` / `write_recording` / `run_live`, `broker_actions` (real MQTT clients),
`recordfile` (the recording format). See docs/scenarios.md.
"""
