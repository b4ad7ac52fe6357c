"""Templating: message templates rendered in Jinja2's sandbox, per channel and locale."""
