"""Tables, one module per domain. Every schema change goes through an Alembic migration in
db/migrations. Importing this package registers every table on ``Base.metadata``."""

from db.models.base import NAMING, Base
from db.models.customers import (
    BackInStockSubscription,
    ConsentChange,
    CoPurchase,
    Customer,
    CustomerStats,
    ProductInterest,
    ProductPurchase,
    Segment,
)
from db.models.delivery import EventRoute, RouteHold
from db.models.intake import Event
from db.models.journeys import (
    Attribution,
    AttributionModel,
    Coupon,
    Experiment,
    JourneyClaim,
    JourneyEntry,
    JourneyOrder,
    Rule,
    RuleAudit,
    RuleVersion,
    SplitAssignment,
)
from db.models.messaging import InboundMessage, Message, MessageEvent, Suppression
from db.models.orders import Order, PaymentLink, Refund
from db.models.platform import ApiKey, AuditEntry, RateLimitBucket
from db.models.templating import TemplateOverride

__all__ = [
    "NAMING",
    "ApiKey",
    "Attribution",
    "AttributionModel",
    "AuditEntry",
    "BackInStockSubscription",
    "Base",
    "CoPurchase",
    "ConsentChange",
    "Coupon",
    "Customer",
    "CustomerStats",
    "Event",
    "EventRoute",
    "Experiment",
    "InboundMessage",
    "JourneyClaim",
    "JourneyEntry",
    "JourneyOrder",
    "Message",
    "MessageEvent",
    "Order",
    "PaymentLink",
    "ProductInterest",
    "ProductPurchase",
    "RateLimitBucket",
    "Refund",
    "RouteHold",
    "Rule",
    "RuleAudit",
    "RuleVersion",
    "Segment",
    "SplitAssignment",
    "Suppression",
    "TemplateOverride",
]
