"""Platform: what every domain leans on: API keys, the audit log, rate limits, metrics, the
Temporal connection and payload encryption, stranded-workflow reports, signed requests to
the shop."""
