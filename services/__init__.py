"""Business logic shared by the API, the dispatcher and activities. Services take the
caller's session and never commit, except the few named in CONTRIBUTING.md ("Sessions and
transactions") that own their transactions and say why in their docstrings."""
