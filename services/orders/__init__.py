"""Orders: the payment ledger (links and refunds) and the notices Sutra sends the shop about
its orders."""
