"""Delivery: the outbox of event routes and the dispatcher that hands them to Temporal, in
order per workflow."""
