"""Sample data for every context name: a Pakistani customer, a cart, an order, a product."""

from __future__ import annotations

from typing import Any

from services.templating.catalogue import BASE_CONTEXT

_SAMPLE_LINE: dict[str, Any] = {
    "sku": "SKU1",
    "name": "Lawn suit",
    "quantity": 2,
    "unit_price": "4500.00",
    "line_total": "9000.00",
    "category": "apparel",
    "url": "https://shop.example.com/p/sku1",
    "image_url": "https://shop.example.com/i/sku1.jpg",
}
# What templates are given in previews and in the checks made when a template is saved.
SAMPLES: dict[str, Any] = {
    "customer": {
        "id": "c_sample",
        "name": "Ayesha Khan",
        "first_name": "Ayesha",
        "email": "ayesha@example.com",
        "phone": "+923001234567",
        "locale": "en-PK",
        "timezone": "Asia/Karachi",
        "country": "PK",
    },
    "shop": {
        "name": "Sutra Demo Shop",
        "url": "https://shop.example.com",
        "support_email": "help@shop.example.com",
    },
    "unsubscribe_url": "https://sutra.example.com/u/sample-token",
    "cart": {
        "id": "cart_sample",
        "currency": "PKR",
        "total": "9000.00",
        "item_count": 2,
        "line_count": 1,
        "first_item_name": "Lawn suit",
        "checkout_url": "https://shop.example.com/checkout/cart_sample",
        "items": [_SAMPLE_LINE],
    },
    "coupon": {"code": "SUTRA-7KQ2-M9XD", "percent_off": 10, "expires_at": "2026-11-25T18:00:00Z"},
    "order": {
        "id": "ord_sample",
        "currency": "PKR",
        "total": "9000.00",
        "items": [{**_SAMPLE_LINE, "image_url": None}],
        "payment_type": "partial_cod",
        "upfront_amount": "1350.00",
        "remaining_amount": "7650.00",
        "payment_link": "https://rzp.io/l/sample",
        "pay_by": "2026-11-23T10:00:00Z",
        "tracking_url": "https://track.example.com/ord_sample",
        "carrier": "TCS",
        "shipping_city": "Lahore",
        "cancel_reason": "unpaid",
        "refund_amount": None,
        "confirm_by": "2026-11-23T10:00:00Z",
        "prepay_offer": {
            "percent_off": 5,
            "amount": "8550.00",
            "payment_link": "https://rzp.io/l/offer",
            "valid_until": "2026-11-23T10:00:00Z",
        },
    },
    "product": {
        "sku": "SKU9",
        "name": "Embroidered shawl",
        "url": "https://shop.example.com/p/sku9",
        "image_url": "https://shop.example.com/i/sku9.jpg",
        "price": "3200.00",
        "old_price": "4000.00",
        "new_price": "3200.00",
        "currency": "PKR",
    },
    "recommendations": [
        {
            "sku": "SKU7",
            "name": "Silk dupatta",
            "url": "https://shop.example.com/p/sku7",
            "image_url": None,
            "price": "1800.00",
            "currency": "PKR",
        }
    ],
}


def sample_context(names: tuple[str, ...] | frozenset[str]) -> dict[str, Any]:
    return {name: SAMPLES[name] for name in (*BASE_CONTEXT, *names) if name in SAMPLES}
