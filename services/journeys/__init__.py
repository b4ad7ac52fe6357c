"""Journeys: rules and their versions, default rules, journey admission and starts, test runs,
A/B tests, coupons, attribution, time triggers, fan-outs and schedules."""
