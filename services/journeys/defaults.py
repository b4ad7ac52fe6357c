"""The rules Sutra installs itself (``services.journeys.rules.ensure_default_rules``), once each, by
slug: the abandoned-cart sequence, active, and the lifecycle journeys as drafts a marketer
reviews and activates.

Each is a plain rule definition (contracts/rules.py), exactly what a marketer would POST to
``/v1/rules``. Once installed it is the marketer's: it is never installed again, even after
it was edited, paused or archived. Channels are in preference order: the first one the
customer can receive on is used. Every default keeps the installation's quiet hours.
"""

from __future__ import annotations

from typing import Any


def _ends_on_any_order() -> dict[str, Any]:
    """Journeys about buying end when the customer places any order, or unsubscribes."""
    return {"events": ["order.placed", "unsubscribed"], "order_scope": "customer"}


def _ends_on_unsubscribe() -> dict[str, Any]:
    """The others end only when the customer unsubscribes (an order does not end them)."""
    return {"events": ["unsubscribed"]}


DEFAULT_ABANDONED_CART_SLUG = "default-abandoned-cart"
DEFAULT_ABANDONED_CART: dict[str, Any] = {
    "name": "Abandoned cart (default)",
    "description": (
        "The classic sequence: 1 h reminder by email, 24 h WhatsApp with 5% off, 72 h "
        "email and SMS with 10% off (last chance), 7 days email with 15% off."
    ),
    "trigger": {"event": "cart.abandoned", "after": "PT1H"},
    "steps": [
        {"send": {"channels": ["email"], "template": "cart_reminder_1"}},
        {"wait": "PT23H"},
        {
            "send": {
                "channels": ["whatsapp", "email"],
                "template": "cart_reminder_2",
                "incentive": {"percent_off": 5, "expires_in": "P2D"},
            }
        },
        {"wait": "P2D"},
        {
            "send": {
                "channels": ["email", "sms"],
                "mode": "all",
                "template": "cart_reminder_3",
                "incentive": {"percent_off": 10, "expires_in": "P2D"},
            }
        },
        {"wait": "P4D"},
        {
            "send": {
                "channels": ["email"],
                "template": "cart_reminder_4",
                "incentive": {"percent_off": 15, "expires_in": "P3D"},
            }
        },
    ],
    "attribution_window": "P5D",
}

DEFAULT_WELCOME: dict[str, Any] = {
    "name": "Welcome series (default)",
    "description": (
        "A new customer gets three messages over a week: a welcome by email at once; "
        "after 2 days what the shop is about (email, else WhatsApp); after 7 days 10% off "
        "the first order (email, else WhatsApp). Ends at the first order or unsubscribe; "
        "once per customer."
    ),
    "trigger": {"event": "customer.created"},
    "steps": [
        {"send": {"channels": ["email"], "template": "welcome_1"}},
        {"wait": "P2D"},
        {"send": {"channels": ["email", "whatsapp"], "template": "welcome_2"}},
        {"wait": "P5D"},
        {
            "send": {
                "channels": ["email", "whatsapp"],
                "template": "welcome_3",
                "incentive": {"percent_off": 10, "expires_in": "P7D"},
            }
        },
    ],
    "exit": _ends_on_any_order(),
    "quiet_hours": "default",
    "attribution_window": "P7D",
    "reentry": {"policy": "once"},
}

DEFAULT_POST_PURCHASE: dict[str, Any] = {
    "name": "Post-purchase (default)",
    "description": (
        "After each delivered order: a thank-you by email at once; after 3 days a review "
        "request (email, else WhatsApp); after 14 days a few products that go with the "
        "order (email). Another order does not end it; unsubscribing does."
    ),
    "trigger": {"event": "order.delivered"},
    "steps": [
        {"send": {"channels": ["email"], "template": "thank_you"}},
        {"wait": "P3D"},
        {"send": {"channels": ["email", "whatsapp"], "template": "review_request"}},
        {"wait": "P11D"},
        {"send": {"channels": ["email"], "template": "cross_sell"}},
    ],
    "exit": _ends_on_unsubscribe(),
    "quiet_hours": "default",
    "attribution_window": "P5D",
    "reentry": {"policy": "every_time"},
}

DEFAULT_REPLENISHMENT: dict[str, Any] = {
    "name": "Replenishment reminder (default)",
    "description": (
        "When a product line's replenish_after has passed since delivery: a reminder to "
        "re-order it at 10:00 local time (email, else WhatsApp). Buying the product again "
        "ends it (the journey watches for its SKU), as does unsubscribing."
    ),
    "trigger": {"event": "replenishment_due"},
    "steps": [
        {"wait_until": "10:00"},
        {"send": {"channels": ["email", "whatsapp"], "template": "replenish_reminder"}},
    ],
    "exit": _ends_on_unsubscribe(),
    "quiet_hours": "default",
    "attribution_window": "P7D",
    "reentry": {"policy": "every_time"},
}

DEFAULT_WIN_BACK: dict[str, Any] = {
    "name": "Win-back (default)",
    "description": (
        "90 days without an order: 10% off by email (else WhatsApp); a week later, 15% off "
        "(email, else WhatsApp). Ends at the next order or unsubscribe."
    ),
    "trigger": {"event": "inactivity", "after": "P90D"},
    "steps": [
        {
            "send": {
                "channels": ["email", "whatsapp"],
                "template": "winback_1",
                "incentive": {"percent_off": 10, "expires_in": "P7D"},
            }
        },
        {"wait": "P7D"},
        {
            "send": {
                "channels": ["email", "whatsapp"],
                "template": "winback_2",
                "incentive": {"percent_off": 15, "expires_in": "P7D"},
            }
        },
    ],
    "exit": _ends_on_any_order(),
    "quiet_hours": "default",
    "attribution_window": "P7D",
    "reentry": {"policy": "every_time"},
}

DEFAULT_BIRTHDAY: dict[str, Any] = {
    "name": "Birthday (default)",
    "description": (
        "On the customer's birthday at 10:00 local time: a greeting with 15% off, valid "
        "7 days (email, else WhatsApp). One per year: the sweep starts it once per birthday."
    ),
    "trigger": {"event": "birthday", "at": "10:00"},
    "steps": [
        {
            "send": {
                "channels": ["email", "whatsapp"],
                "template": "birthday",
                "incentive": {"percent_off": 15, "expires_in": "P7D"},
            }
        },
    ],
    "exit": _ends_on_unsubscribe(),
    "quiet_hours": "default",
    "attribution_window": "P7D",
    "reentry": {"policy": "every_time"},
}

DEFAULT_PURCHASE_ANNIVERSARY: dict[str, Any] = {
    "name": "Purchase anniversary (default)",
    "description": (
        "A year to the day after the customer's first order, at 10:00 local time: a thank-"
        "you for the year (email, else WhatsApp). One per year: the sweep starts it once."
    ),
    "trigger": {"event": "purchase_anniversary", "at": "10:00"},
    "steps": [
        {"send": {"channels": ["email", "whatsapp"], "template": "anniversary"}},
    ],
    "exit": _ends_on_unsubscribe(),
    "quiet_hours": "default",
    "attribution_window": "P7D",
    "reentry": {"policy": "every_time"},
}

DEFAULT_BACK_IN_STOCK: dict[str, Any] = {
    "name": "Back in stock (default)",
    "description": (
        "A product the customer subscribed to, viewed or carted is back in stock: one "
        "message (email, else SMS), every time it comes back."
    ),
    "trigger": {"event": "product.back_in_stock"},
    "steps": [
        {"send": {"channels": ["email", "sms"], "template": "back_in_stock"}},
    ],
    "exit": _ends_on_unsubscribe(),
    "quiet_hours": "default",
    "attribution_window": "P3D",
    "reentry": {"policy": "every_time"},
}

DEFAULT_PRICE_DROP: dict[str, Any] = {
    "name": "Price drop (default)",
    "description": (
        "A product the customer viewed or carted got cheaper: the old and new price "
        "(email, else WhatsApp), at most once a week per customer."
    ),
    "trigger": {"event": "product.price_dropped"},
    "steps": [
        {"send": {"channels": ["email", "whatsapp"], "template": "price_drop"}},
    ],
    "exit": _ends_on_unsubscribe(),
    "quiet_hours": "default",
    "attribution_window": "P3D",
    "reentry": {"policy": "once_per", "period": "P7D"},
}

# Installed as drafts, in this order, each once by its slug.
LIFECYCLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "default-welcome": DEFAULT_WELCOME,
    "default-post-purchase": DEFAULT_POST_PURCHASE,
    "default-replenishment": DEFAULT_REPLENISHMENT,
    "default-win-back": DEFAULT_WIN_BACK,
    "default-birthday": DEFAULT_BIRTHDAY,
    "default-purchase-anniversary": DEFAULT_PURCHASE_ANNIVERSARY,
    "default-back-in-stock": DEFAULT_BACK_IN_STOCK,
    "default-price-drop": DEFAULT_PRICE_DROP,
}
