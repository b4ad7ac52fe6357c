"""Temporal workflows: orchestration only, deterministic, one workflow class per file."""

from workflows.cart import CartWorkflow

ALL = [CartWorkflow]
