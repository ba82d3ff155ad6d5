"""The settlement status read model (issue 19): card payments and holder payouts, folded from their topics into a
SQLite file the HTTP API reads (docs/status-read-model.md)."""
