"""Every setting Sutra reads, from the environment (prefix ``SUTRA_``) and nowhere else."""

from __future__ import annotations

import base64
import binascii
from datetime import time, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Literal, Self

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.attribution import DEFAULT_WINDOWS, Windows
from contracts.payment_policy import PaymentPolicy

# Only ever accepted outside production: it lets `make run` work with nothing configured.
DEV_SECRET_KEY = "sutra-development-only-secret-key-change-me"


def parse_payload_keys(spec: str) -> list[tuple[str, bytes]]:
    """``"kid1:base64key,kid2:base64key"`` -> [(kid, key)]; the first encrypts, all decrypt.

    Keys are AES keys of 16, 24 or 32 bytes, base64 (standard or URL-safe alphabet).
    """
    keys: list[tuple[str, bytes]] = []
    for n, entry in enumerate((e.strip() for e in spec.split(",")), start=1):
        if not entry:
            continue
        kid, sep, encoded = entry.partition(":")
        kid, encoded = kid.strip(), encoded.strip()
        if not sep or not kid or not encoded:
            raise ValueError(
                f"SUTRA_PAYLOAD_KEYS entry {n} must be 'key-id:base64-key' "
                "(e.g. 'k2025:<32 bytes in base64>')"
            )
        if any(kid == seen for seen, _ in keys):
            raise ValueError(f"SUTRA_PAYLOAD_KEYS names key id {kid!r} twice")
        normal = encoded.replace("-", "+").replace("_", "/")
        try:
            key = base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"SUTRA_PAYLOAD_KEYS key {kid!r} is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise ValueError(
                f"SUTRA_PAYLOAD_KEYS key {kid!r} is {len(key)} bytes; AES-GCM keys are "
                "16, 24 or 32 bytes (make one with: openssl rand -base64 32)"
            )
        keys.append((kid, key))
    if not keys:
        raise ValueError("SUTRA_PAYLOAD_KEYS is set but holds no key")
    return keys


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class MissingSecretsError(RuntimeError):
    """Raised at start-up when production lacks secrets; names every missing variable."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            "refusing to start in production: missing or insecure "
            + ", ".join(missing)
            + " (set them in the environment)"
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUTRA_", extra="ignore", frozen=True)

    env: Environment = Environment.development
    log_level: str = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON log lines; defaults to on in production"
    )
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # The worker's own Prometheus endpoint (GET /metrics): Sutra's counters of the work it
    # does and the Temporal SDK's metrics. Off unless a port is given (`make run`: 9464).
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # OpenTelemetry traces (OTLP over HTTP, e.g. http://collector:4318/v1/traces) of
    # workflows, activities and the API's Temporal calls; needs the `otel` extra.
    otlp_endpoint: str | None = None
    otlp_service_name: str = "sutra"

    # Plain DATABASE_URL is honoured too: it is what hosting platforms set.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SUTRA_DATABASE_URL", "DATABASE_URL")
    )
    database_pool_size: int = Field(default=10, ge=1)
    # Bounds on every wait for PostgreSQL (db/engine.py), so a database that hangs turns
    # into quick errors (503s, retried activities) rather than requests that never end.
    database_connect_timeout: timedelta = timedelta(seconds=5)
    database_statement_timeout: timedelta = timedelta(seconds=10)
    database_pool_timeout: timedelta = timedelta(seconds=5)

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "sutra"
    # Order workflows run on their own queue, on a worker that keeps no sticky cache (see
    # services/temporal.order_task_queue); default: "<temporal_task_queue>-orders".
    temporal_order_task_queue: str | None = None
    # Workflows the main worker keeps between tasks: none by default, since a cold worker's
    # query can make a cached run write a history nothing replays (sdk-python#1591).
    temporal_workflow_cache: int = Field(default=0, ge=0)
    temporal_tls: bool = False
    temporal_tls_cert_path: str | None = None
    temporal_tls_key_path: str | None = None
    temporal_tls_ca_path: str | None = None
    temporal_api_key: SecretStr | None = None
    temporal_ui_url: str = "http://127.0.0.1:8233"

    bootstrap_admin_key: SecretStr | None = None

    # Encryption of Temporal payloads (customer data): "kid1:base64key,kid2:base64key",
    # the first key encrypts, every key decrypts (rotation: put the new key first).
    payload_keys: SecretStr | None = None
    # The Temporal UI's origin (or several, comma-separated), allowed (CORS) to call the
    # codec endpoint /codec/decode.
    temporal_ui_origin: str = "http://127.0.0.1:8233"

    # Event intake and routing.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_events: int = Field(default=500, ge=1)
    # Requests per minute per API key (per client IP for requests without a known key),
    # and how many may come at once: a token bucket shared by every API process through
    # PostgreSQL. 0 turns the limit off. Provider webhooks and probes are not limited.
    rate_limit_per_minute: int = Field(default=12_000, ge=0)
    rate_limit_burst: int = Field(default=2_000, ge=1)
    # Clocks (README "Events"): an occurred_at further ahead of Sutra's clock than this is
    # refused; a smaller lead counts as "now". An event received longer than the late bound
    # after it occurred is kept as a fact but starts no cart, lifecycle or fan-out journey.
    event_max_future_skew: timedelta = Field(default=timedelta(minutes=15), gt=timedelta(0))
    event_late_after: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0))
    dispatcher_enabled: bool = True
    dispatcher_poll_interval: timedelta = timedelta(seconds=1)
    dispatcher_batch_size: int = Field(default=500, ge=1)
    dispatcher_concurrency: int = Field(default=64, ge=1)
    dispatcher_max_backoff: timedelta = timedelta(seconds=30)
    dispatcher_rpc_timeout: timedelta = timedelta(seconds=5)
    # How long POST /v1/orders/{id}/transitions waits for an order worker to answer the
    # move before answering 503 (the move is in the order's history and applies when one runs).
    order_update_timeout: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    # How often each API process asks Temporal for workflows whose tasks keep failing
    # (the sutra_stranded_workflows gauge and /readyz's count).
    stranded_check_every: timedelta = Field(default=timedelta(seconds=15), gt=timedelta(0))

    # Journeys.
    cart_idle_after: timedelta = timedelta(hours=1)
    cart_expire_after: timedelta = timedelta(days=30)
    # Product fan-outs (back in stock, price drop): audience page size and journeys started
    # per second, so one popular product cannot flood the providers or the worker.
    fanout_batch_size: int = Field(default=200, gt=0)
    fanout_rate_per_second: float = Field(default=50.0, gt=0)
    # How often the time-trigger Schedule sweeps for due birthdays, anniversaries, win-backs
    # and replenishments (hourly reaches every zone's local hour); 0 removes the Schedule.
    time_trigger_sweep_every: timedelta = timedelta(hours=1)

    # Where customers and providers reach this API (links, webhooks, signature checks).
    public_url: str = "http://127.0.0.1:8000"
    shop_name: str = "Sutra Demo Shop"
    shop_url: str = "https://shop.example.com"
    shop_support_email: str = "help@shop.example.com"
    # The zone analytics days are counted in (a report's "1 March" is the shop's 1 March);
    # unset: SUTRA_DEFAULT_TIMEZONE.
    shop_timezone: str | None = None
    # The locale the dashboard formats numbers, money and dates in (Babel), e.g. en_IN.
    shop_locale: str = "en"
    # How long after a message, per channel, an order is credited to it (JSON, e.g.
    # {"email": "P5D", "sms": "PT24H"}); the model set through the API replaces it.
    attribution_windows: Windows = Field(default_factory=lambda: dict(DEFAULT_WINDOWS))
    # What one message sent costs, per channel and currency (JSON, e.g.
    # '{"sms": {"PKR": "2.50"}, "whatsapp": {"PKR": "4.00"}}'), for rule analytics' message
    # cost and ROI; a channel left out costs nothing, and a currency without a cost has no ROI.
    message_costs: dict[Literal["email", "sms", "whatsapp"], dict[str, Decimal]] = Field(
        default_factory=dict
    )

    # Rules of the road for marketing messages; rules may override them.
    default_timezone: str = "UTC"
    quiet_hours_start: time = time(21, 0)
    quiet_hours_end: time = time(9, 0)
    frequency_cap: timedelta = timedelta(hours=16)
    # A send cut off mid-call is not repeated until the provider has had this long to
    # report it (SendGrid has no lookup; its event webhook is the witness).
    send_confirmation_grace: timedelta = timedelta(minutes=2)
    webhook_tolerance: timedelta = timedelta(minutes=5)
    # Razorpay signs no timestamp and retries for 24 h: older notifications are replays.
    payment_webhook_max_age: timedelta = timedelta(hours=48)

    # Channels.
    email_from: str = "shop@example.com"
    email_from_name: str | None = None
    sendgrid_asm_group_id: int | None = None
    sendgrid_host: str = "https://api.sendgrid.com"
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_sms_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_whatsapp_from: str | None = None
    sms_dlt_entity_id: str | None = None
    provider_timeout: timedelta = timedelta(seconds=10)
    # The longest a provider's Retry-After may hold back a send's next attempt: a bad or
    # far-off value must not park a message for hours.
    provider_retry_after_max: timedelta = timedelta(minutes=10)

    # Rules whose incentives come from the shop call this endpoint (HMAC-signed).
    coupon_webhook_url: str | None = None
    coupon_webhook_secret: SecretStr | None = None

    # Orders and payments: upfront shares, deadlines, reminders (JSON in SUTRA_PAYMENT_POLICY).
    payment_policy: PaymentPolicy = Field(default_factory=PaymentPolicy)
    # The shop hears of cancellations and SLA breaches here (HMAC-signed, retried durably).
    shop_webhook_url: str | None = None
    shop_webhook_secret: SecretStr | None = None
    razorpay_base_url: str = "https://api.razorpay.com"
    stripe_api_base: str = "https://api.stripe.com"

    # Providers. Absent credentials mean that channel writes to the outbox.
    sendgrid_api_key: SecretStr | None = None
    sendgrid_webhook_public_key: SecretStr | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_webhook_secret: SecretStr | None = None
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    # Channels a production install deliberately runs on the outbox (e.g. "sms,whatsapp").
    outbox_channels: str = ""

    @field_validator(
        "database_connect_timeout", "database_statement_timeout", "database_pool_timeout"
    )
    @classmethod
    def _check_database_timeouts(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        name = f"SUTRA_{(info.field_name or '').upper()}"
        if value <= timedelta(0):
            raise ValueError(f"{name} must be longer than zero (an ISO 8601 duration, e.g. PT5S)")
        if info.field_name == "database_connect_timeout" and value < timedelta(seconds=2):
            raise ValueError(f"{name} must be at least 2 seconds (libpq's minimum)")
        return value

    @field_validator("shop_locale")
    @classmethod
    def _check_shop_locale(cls, value: str) -> str:
        from babel import Locale, UnknownLocaleError

        try:
            Locale.parse(value.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            raise ValueError(
                f"SUTRA_SHOP_LOCALE {value!r} is not a locale Babel knows (e.g. en, en_IN, ur_PK)"
            ) from None
        return value.replace("-", "_")

    @field_validator("message_costs")
    @classmethod
    def _check_message_costs(
        cls, value: dict[str, dict[str, Decimal]]
    ) -> dict[str, dict[str, Decimal]]:
        for channel, costs in value.items():
            for currency, amount in costs.items():
                if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
                    raise ValueError(
                        f"SUTRA_MESSAGE_COSTS[{channel}]: {currency!r} is not an ISO 4217 "
                        "currency code (e.g. PKR)"
                    )
                if amount < 0 or not amount.is_finite():
                    raise ValueError(f"SUTRA_MESSAGE_COSTS[{channel}][{currency}] must be >= 0")
        return value

    @field_validator("payload_keys")
    @classmethod
    def _check_payload_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            parse_payload_keys(value.get_secret_value())
            return value
        return None

    @property
    def payload_key_list(self) -> list[tuple[str, bytes]]:
        if self.payload_keys is None:
            return []
        return parse_payload_keys(self.payload_keys.get_secret_value())

    @property
    def is_production(self) -> bool:
        return self.env is Environment.production

    @property
    def outboxed(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.outbox_channels.split(",") if c.strip())

    @property
    def json_logs(self) -> bool:
        return self.is_production if self.log_json is None else self.log_json

    @property
    def sqlalchemy_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "no database configured: set DATABASE_URL (make run starts an embedded one)"
            )
        return to_sqlalchemy_url(self.database_url)

    def _channel_secrets(self) -> dict[str, dict[str, object]]:
        """What each channel needs to send for real and to verify its webhooks."""
        twilio: dict[str, object] = {
            "SUTRA_TWILIO_ACCOUNT_SID": self.twilio_account_sid,
            "SUTRA_TWILIO_AUTH_TOKEN": self.twilio_auth_token,
        }
        return {
            "email": {
                "SUTRA_SENDGRID_API_KEY": self.sendgrid_api_key,
                "SUTRA_SENDGRID_WEBHOOK_PUBLIC_KEY": self.sendgrid_webhook_public_key,
            },
            "sms": twilio,
            "whatsapp": twilio,
        }

    @model_validator(mode="after")
    def _check_secrets(self) -> Self:
        pairs = {
            "Twilio": ("SUTRA_TWILIO_ACCOUNT_SID", "SUTRA_TWILIO_AUTH_TOKEN"),
            "Razorpay": ("SUTRA_RAZORPAY_KEY_ID", "SUTRA_RAZORPAY_KEY_SECRET"),
        }
        for provider, names in pairs.items():
            given = [n for n in names if self._env_value(n)]
            if given and len(given) != len(names):
                # Half-configured credentials are a mistake in every environment.
                raise ValueError(
                    f"{provider} is half-configured: {', '.join(given)} is set but "
                    + ", ".join(n for n in names if n not in given)
                    + " is not"
                )
        if not self.is_production:
            return self
        missing: list[str] = []
        secret = self.secret_key.get_secret_value()
        if secret in ("", DEV_SECRET_KEY):
            missing.append("SUTRA_SECRET_KEY")
        elif len(secret) < 32:
            missing.append("SUTRA_SECRET_KEY (at least 32 characters)")
        if not self.database_url:
            missing.append("DATABASE_URL")
        if self.payload_keys is None:
            missing.append("SUTRA_PAYLOAD_KEYS")
        if self.temporal_tls_cert_path and not self.temporal_tls_key_path:
            missing.append("SUTRA_TEMPORAL_TLS_KEY_PATH")
        for channel, needed in self._channel_secrets().items():
            if channel not in self.outboxed:
                missing.extend(k for k, v in needed.items() if not v and k not in missing)
        if self.twilio_account_sid and not (
            self.twilio_sms_from or self.twilio_messaging_service_sid
        ):
            missing.append("SUTRA_TWILIO_SMS_FROM (or SUTRA_TWILIO_MESSAGING_SERVICE_SID)")
        if self.sendgrid_api_key and self.email_from == "shop@example.com":
            missing.append("SUTRA_EMAIL_FROM")
        if self.razorpay_key_id and not self.razorpay_webhook_secret:
            missing.append("SUTRA_RAZORPAY_WEBHOOK_SECRET")
        if self.stripe_api_key and not self.stripe_webhook_secret:
            missing.append("SUTRA_STRIPE_WEBHOOK_SECRET")
        if self.shop_webhook_url and not self.shop_webhook_secret:
            missing.append("SUTRA_SHOP_WEBHOOK_SECRET")
        if missing:
            raise MissingSecretsError(missing)
        return self

    def _env_value(self, env_name: str) -> object:
        return getattr(self, env_name.removeprefix("SUTRA_").lower())


def to_sqlalchemy_url(url: str) -> str:
    """Accept the usual postgres:// spellings and pin the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(
        f"DATABASE_URL must be a PostgreSQL URL, got scheme of {url.split(':', 1)[0]!r}"
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
