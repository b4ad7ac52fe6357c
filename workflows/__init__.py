"""Temporal workflows: orchestration only, deterministic, one workflow class per file.

The package imports none of them (``workflows.registry.ALL`` lists them): the sandbox
re-imports a workflow's package with its module for every run, and importing all five
here made every run execute all five modules.
"""
