"""Temporal activities: the only code a workflow runs that touches the world."""
