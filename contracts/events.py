"""The events a shop's commerce backend sends (API.md, "Events").

One model per event type, joined in a union discriminated by ``type``. Unknown fields are
kept (``extra="allow"``): whatever a client sent and we accepted is stored as sent.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from contracts.fields import (
    Country,
    Currency,
    Email,
    Identifier,
    LocaleTag,
    Money,
    Phone,
    Timezone,
    check_money_precision,
    utc_instant,
)

PaymentType = Literal["prepaid", "cod", "partial_cod"]
PaymentStatus = Literal["pending", "partially_paid", "fully_paid", "failed", "refunded"]
Url = Annotated[str, Field(max_length=2048, pattern=r"^https?://\S+$")]
ShortText = Annotated[str, Field(min_length=1, max_length=500)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)


class Consent(_Open):
    email: bool | None = None
    sms: bool | None = None
    whatsapp: bool | None = None


class CustomerIn(_Open):
    id: Identifier
    email: Email | None = None
    phone: Phone | None = None
    name: Annotated[str, Field(max_length=200)] | None = None
    locale: LocaleTag | None = None
    timezone: Timezone | None = None
    currency: Currency | None = None
    country: Country | None = None
    birthday: date | None = None
    consent: Consent | None = None


class LineItem(_Open):
    sku: Identifier
    name: ShortText
    quantity: int = Field(ge=1, le=100_000)
    unit_price: Money
    category: Annotated[str, Field(max_length=200)] | None = None
    product_id: Identifier | None = None
    url: Url | None = None
    image_url: Url | None = None


def _check_item_prices(items: list[LineItem], currency: str) -> None:
    for index, item in enumerate(items):
        check_money_precision(item.unit_price, currency, f"items[{index}].unit_price")


class CartData(_Open):
    cart_id: Identifier
    currency: Currency
    items: list[LineItem] = Field(max_length=500)
    total: Money | None = None
    checkout_url: Url | None = None

    @model_validator(mode="after")
    def _money(self) -> Self:
        _check_item_prices(self.items, self.currency)
        if self.total is not None:
            check_money_precision(self.total, self.currency, "total")
        return self

    @property
    def computed_total(self) -> Decimal:
        if self.total is not None:
            return self.total
        return sum((i.unit_price * i.quantity for i in self.items), Decimal(0))


class Shipping(_Open):
    city: Annotated[str, Field(max_length=200)] | None = None
    postal_code: Annotated[str, Field(max_length=32)] | None = None
    country: Country | None = None


class OrderPlacedData(_Open):
    order_id: Identifier
    cart_id: Identifier | None = None
    items: list[LineItem] = Field(min_length=1, max_length=500)
    total: Money
    currency: Currency
    payment_type: PaymentType
    payment_status: PaymentStatus = "pending"
    upfront_amount: Money | None = None
    remaining_amount: Money | None = None
    shipping: Shipping | None = None
    # API.md names the shipping fields without saying whether they nest; both spellings work.
    city: Annotated[str, Field(max_length=200)] | None = None
    postal_code: Annotated[str, Field(max_length=32)] | None = None
    country: Country | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_item_prices(self.items, self.currency)
        for name in ("total", "upfront_amount", "remaining_amount"):
            value = getattr(self, name)
            if value is not None:
                check_money_precision(value, self.currency, name)
        if self.upfront_amount is not None and self.upfront_amount > self.total:
            raise ValueError("upfront_amount must not exceed total")
        if (
            self.upfront_amount is not None
            and self.remaining_amount is not None
            and self.upfront_amount + self.remaining_amount != self.total
        ):
            raise ValueError("upfront_amount + remaining_amount must equal total")
        flat = {"city": self.city, "postal_code": self.postal_code, "country": self.country}
        if any(v is not None for v in flat.values()):
            nested = self.shipping or Shipping()
            for key, value in flat.items():
                current = getattr(nested, key)
                if value is not None and current is not None and current != value:
                    raise ValueError(f"shipping.{key} and {key} disagree")
                if current is None:
                    setattr(nested, key, value)
            self.shipping = nested
        return self


class PaymentData(_Open):
    order_id: Identifier
    amount: Money
    currency: Currency
    payment_id: Identifier | None = None
    provider: Annotated[str, Field(max_length=64)] | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _money(self) -> Self:
        check_money_precision(self.amount, self.currency, "amount")
        return self


class RefundData(PaymentData):
    refund_id: Identifier | None = None  # the provider's or shop's; the event id if absent


class OrderProgressData(_Open):
    order_id: Identifier
    tracking_url: Url | None = None
    carrier: Annotated[str, Field(max_length=100)] | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None


class ProductData(_Open):
    sku: Identifier
    product_id: Identifier | None = None
    name: ShortText | None = None
    url: Url | None = None
    image_url: Url | None = None


class PriceDroppedData(ProductData):
    currency: Currency
    old_price: Money
    new_price: Money

    @model_validator(mode="after")
    def _dropped(self) -> Self:
        check_money_precision(self.old_price, self.currency, "old_price")
        check_money_precision(self.new_price, self.currency, "new_price")
        if self.new_price >= self.old_price:
            raise ValueError("new_price must be lower than old_price for a price drop")
        return self


class CustomerData(_Open):
    pass


# No shop event happened before this: an earlier occurred_at is a zero, missing or
# misread timestamp (Unix time 0 is 1970-01-01), and arithmetic on it (an order's
# 30-day look-back) stays inside the years datetime can hold.
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)


class _Event(_Open):
    id: Identifier
    occurred_at: AwareDatetime = Field(
        description="When it happened, with its UTC offset (or Z). At most "
        "SUTRA_EVENT_MAX_FUTURE_SKEW ahead of Sutra's clock, and not before 2000-01-01."
    )

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        instant = utc_instant(value)
        if instant < EARLIEST_OCCURRED_AT:
            raise ValueError(
                f"{value.isoformat()} is before {EARLIEST_OCCURRED_AT:%Y-%m-%dT%H:%M:%SZ}: "
                "a zero, missing or misread timestamp, not when a shop event happened"
            )
        return instant

    @property
    def customer_id(self) -> str | None:
        customer = getattr(self, "customer", None)
        return customer.id if customer is not None else None


class _CustomerEvent(_Event):
    customer: CustomerIn


class _MaybeCustomerEvent(_Event):
    customer: CustomerIn | None = None


class CustomerCreated(_CustomerEvent):
    type: Literal["customer.created"]
    data: CustomerData = Field(default_factory=CustomerData)


class CustomerUpdated(_CustomerEvent):
    type: Literal["customer.updated"]
    data: CustomerData = Field(default_factory=CustomerData)


class CartUpdated(_CustomerEvent):
    type: Literal["cart.updated"]
    data: CartData


class CheckoutStarted(_CustomerEvent):
    type: Literal["checkout.started"]
    data: CartData


class OrderPlaced(_CustomerEvent):
    type: Literal["order.placed"]
    data: OrderPlacedData


class PaymentCaptured(_MaybeCustomerEvent):
    type: Literal["payment.captured"]
    data: PaymentData


class PaymentFailed(_MaybeCustomerEvent):
    type: Literal["payment.failed"]
    data: PaymentData


class PaymentRefunded(_MaybeCustomerEvent):
    """The shop (or its payment provider) gave money back: recorded on the order, also
    after it has ended (a refund after a delivery)."""

    type: Literal["payment.refunded"]
    data: RefundData


class OrderPacked(_MaybeCustomerEvent):
    type: Literal["order.packed"]
    data: OrderProgressData


class OrderShipped(_MaybeCustomerEvent):
    type: Literal["order.shipped"]
    data: OrderProgressData


class OrderOutForDelivery(_MaybeCustomerEvent):
    type: Literal["order.out_for_delivery"]
    data: OrderProgressData


class OrderDelivered(_MaybeCustomerEvent):
    type: Literal["order.delivered"]
    data: OrderProgressData


class OrderCancelled(_MaybeCustomerEvent):
    type: Literal["order.cancelled"]
    data: OrderProgressData


class OrderRto(_MaybeCustomerEvent):
    type: Literal["order.rto"]
    data: OrderProgressData


class ProductBackInStock(_Event):
    type: Literal["product.back_in_stock"]
    data: ProductData


class ProductPriceDropped(_Event):
    type: Literal["product.price_dropped"]
    data: PriceDroppedData


class BackInStockSubscribed(_CustomerEvent):
    type: Literal["back_in_stock.subscribed"]
    data: ProductData


Event = Annotated[
    CustomerCreated
    | CustomerUpdated
    | CartUpdated
    | CheckoutStarted
    | OrderPlaced
    | PaymentCaptured
    | PaymentFailed
    | PaymentRefunded
    | OrderPacked
    | OrderShipped
    | OrderOutForDelivery
    | OrderDelivered
    | OrderCancelled
    | OrderRto
    | ProductBackInStock
    | ProductPriceDropped
    | BackInStockSubscribed,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: tuple[str, ...] = (
    "customer.created",
    "customer.updated",
    "cart.updated",
    "checkout.started",
    "order.placed",
    "payment.captured",
    "payment.failed",
    "payment.refunded",
    "order.packed",
    "order.shipped",
    "order.out_for_delivery",
    "order.delivered",
    "order.cancelled",
    "order.rto",
    "product.back_in_stock",
    "product.price_dropped",
    "back_in_stock.subscribed",
)


def event_cart_id(event: Any) -> str | None:
    return getattr(getattr(event, "data", None), "cart_id", None)


def event_order_id(event: Any) -> str | None:
    return getattr(getattr(event, "data", None), "order_id", None)
