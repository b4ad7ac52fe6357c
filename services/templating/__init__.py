"""Templating: message templates rendered in Jinja2's sandbox, per channel and locale.

- ``renderer``: ``Renderer`` (render a template, check a marketer's source), ``Rendered``,
  ``TemplateError``;
- ``catalogue``: the shipped defaults under ``templates/`` and ``templates/catalog.toml``,
  and the locale fallback;
- ``overrides``: the marketers' stored versions, every query on them;
- ``sandbox``: the Jinja2 environment and the limits it enforces;
- ``filters``: money, dates and times in the customer's locale and time zone;
- ``samples``: the sample data of previews and save-time checks.

Callers import from these modules; this package re-exports nothing.
"""
