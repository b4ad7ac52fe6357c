"""Local fake provider servers for tests, checked against the providers' own OpenAPI specs."""
