"""Simulated city fleets with labelled anomalies.

Entry points: `fleet.build_fleet`, `generator.generate`, `anomalies.AnomalySpec`,
`inventory.write_inventory` / `load_inventory`, `publisher.publish`, `runner.run_simulation`.
"""
