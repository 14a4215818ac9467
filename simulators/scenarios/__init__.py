"""The scenario library: one TOML file per scenario (see docs/scenarios.md)."""
