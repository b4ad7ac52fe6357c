"""The names Temporal knows Sutra's workflows by: workflow types, signals, queries, updates.

Defined here and nowhere else, so the workflow that declares a handler and the service that
starts, signals, queries or updates it cannot drift apart. The values are part of every
recorded history, every ``event_routes`` row waiting for the dispatcher and every Schedule
on the server: renaming one strands the runs, routes and schedules that carry the old name.
A new name is a new constant here; an existing value never changes.
"""

from __future__ import annotations

# --- workflow types -----------------------------------------------------------------------

CART_WORKFLOW = "CartWorkflow"
ORDER_WORKFLOW = "OrderWorkflow"
LIFECYCLE_WORKFLOW = "LifecycleJourney"
FANOUT_WORKFLOW = "ProductFanout"
SWEEP_WORKFLOW = "TimeTriggerSweep"

# --- signals --------------------------------------------------------------------------------

# A routed event: a cart and an order take an ``Event``-shaped payload (services/intake/
# routing.py), a lifecycle journey a ``LifecycleEvent``.
EVENT_SIGNAL = "event"
MESSAGE_STATUS_SIGNAL = "message_status"
INBOUND_SIGNAL = "inbound_message"
RULE_PAUSED_SIGNAL = "rule_paused"
# Ops pause, resume or end one journey (services/journeys/controls.py). A signal since the
# update below can strand a cached run next to a cold worker's query (sdk-python#1591).
JOURNEY_CONTROL_SIGNAL = "journey_control_requested"
# Ops move an order (services/orders/moves.py), then read the answer back by query: an
# update accepted beside an event signal once left an order no worker could replay.
TRANSITION_SIGNAL = "transition_requested"

# --- queries --------------------------------------------------------------------------------

# Every Sutra workflow answers it with its state model (CartState, OrderState, ...).
STATE_QUERY = "state"
# The order workflow: where one TRANSITION_SIGNAL stands, by its request id.
TRANSITION_OUTCOME_QUERY = "transition_outcome"

# --- updates --------------------------------------------------------------------------------

# Ops moved orders this way before TRANSITION_SIGNAL; the order workflow keeps the handler
# for clients that still send it.
TRANSITION_UPDATE = "transition"
# Ops paused, resumed or ended a journey this way before JOURNEY_CONTROL_SIGNAL; the cart
# and lifecycle workflows keep the handler for the runs that took one.
JOURNEY_CONTROL_UPDATE = "journey_control"
