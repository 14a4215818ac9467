"""Storage of records: InfluxDB through its v1 HTTP API, or memory for the offline demo."""
