"""The VisionDesk engine: a separate process that owns models, jobs and backends. No Qt here."""
