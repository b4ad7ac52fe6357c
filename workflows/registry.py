"""Every workflow type the worker runs and the replay tests replay."""

from workflows.cart import CartWorkflow
from workflows.lifecycle import LifecycleJourneyWorkflow
from workflows.order import OrderWorkflow
from workflows.product_fanout import ProductFanout
from workflows.time_trigger_sweep import TimeTriggerSweep

ALL = [CartWorkflow, OrderWorkflow, LifecycleJourneyWorkflow, ProductFanout, TimeTriggerSweep]
