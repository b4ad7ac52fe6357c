"""Messaging: sending one message (send policy, ledger, provider call), suppressions and
consent, unsubscribe links, and what providers report afterwards."""
