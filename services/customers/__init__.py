"""Customers: profiles, the facts kept from their events, computed attributes, segments, and
privacy (export, erasure)."""
