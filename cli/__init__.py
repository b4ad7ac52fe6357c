"""``sutra``: the command line over Sutra's HTTP API (ops and marketers). It talks HTTP to
a running Sutra and imports nothing else of ours."""
