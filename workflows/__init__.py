"""Temporal workflows: orchestration only, deterministic, one workflow class per file."""

from workflows.cart import CartWorkflow
from workflows.order import OrderWorkflow

ALL = [CartWorkflow, OrderWorkflow]
