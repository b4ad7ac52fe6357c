"""Settings come from the environment; production refuses to start without its secrets."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from config.settings import MissingSecretsError, Settings

STRONG = "s" * 40


def test_development_needs_nothing(monkeypatch: pytest.MonkeyPatch):
    for name in ("DATABASE_URL", "SUTRA_DATABASE_URL", "SUTRA_ENV"):
        monkeypatch.delenv(name, raising=False)

    settings = Settings()

    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.temporal_task_queue == "sutra"


def test_settings_are_read_with_the_sutra_prefix(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SUTRA_TEMPORAL_NAMESPACE", "shop-prod")
    monkeypatch.setenv("SUTRA_CART_IDLE_AFTER", "PT30M")
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db:5432/sutra")

    settings = Settings()

    assert settings.temporal_namespace == "shop-prod"
    assert settings.cart_idle_after.total_seconds() == 1800
    assert settings.sqlalchemy_url == "postgresql+psycopg://u@db:5432/sutra"


def test_production_names_every_missing_secret(monkeypatch: pytest.MonkeyPatch):
    for name in ("DATABASE_URL", "SUTRA_DATABASE_URL", "SUTRA_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(MissingSecretsError) as caught:
        Settings(env="production")

    message = str(caught.value)
    for name in (
        "SUTRA_SECRET_KEY",
        "DATABASE_URL",
        "SUTRA_SENDGRID_API_KEY",
        "SUTRA_SENDGRID_WEBHOOK_PUBLIC_KEY",
        "SUTRA_TWILIO_ACCOUNT_SID",
        "SUTRA_TWILIO_AUTH_TOKEN",
    ):
        assert name in message
    assert message.startswith("refusing to start in production")


# Production encrypts Temporal payloads: one 32-byte key under id "k1".
PAYLOAD_KEYS = "k1:" + base64.b64encode(b"k" * 32).decode()


def test_production_starts_when_configured():
    settings = Settings(
        env="production",
        secret_key=STRONG,
        database_url="postgresql://u@db/sutra",
        sendgrid_api_key="SG.x",
        sendgrid_webhook_public_key="pk",
        twilio_account_sid="AC123",
        twilio_auth_token="t",
        twilio_sms_from="+15005550006",
        email_from="orders@shop.example",
        payload_keys=PAYLOAD_KEYS,
    )

    assert settings.is_production
    assert settings.json_logs


def test_production_may_run_a_channel_on_the_outbox_only_when_told_to():
    settings = Settings(
        env="production",
        secret_key=STRONG,
        database_url="postgresql://u@db/sutra",
        sendgrid_api_key="SG.x",
        sendgrid_webhook_public_key="pk",
        email_from="orders@shop.example",
        outbox_channels="sms,whatsapp",
        payload_keys=PAYLOAD_KEYS,
    )

    assert settings.outbox_channels == "sms,whatsapp"


def test_production_refuses_a_weak_secret_key():
    with pytest.raises(MissingSecretsError, match="at least 32 characters"):
        Settings(
            env="production",
            secret_key="short",
            database_url="postgresql://u@db/sutra",
            outbox_channels="email,sms,whatsapp",
        )


def test_payment_secrets_are_required_with_their_provider_in_production():
    with pytest.raises(MissingSecretsError, match="SUTRA_STRIPE_WEBHOOK_SECRET"):
        Settings(
            env="production",
            secret_key=STRONG,
            database_url="postgresql://u@db/sutra",
            outbox_channels="email,sms,whatsapp",
            stripe_api_key="sk_live_x",
        )


def test_production_needs_senders_for_its_providers():
    with pytest.raises(MissingSecretsError) as caught:
        Settings(
            env="production",
            secret_key=STRONG,
            database_url="postgresql://u@db/sutra",
            sendgrid_api_key="SG.x",
            sendgrid_webhook_public_key="pk",
            twilio_account_sid="AC123",
            twilio_auth_token="t",
        )

    assert "SUTRA_EMAIL_FROM" in str(caught.value)
    assert "SUTRA_TWILIO_SMS_FROM" in str(caught.value)


def test_half_configured_credentials_are_refused_everywhere():
    with pytest.raises(ValidationError, match="SUTRA_TWILIO_AUTH_TOKEN"):
        Settings(twilio_account_sid="AC123")


def test_database_timeouts_must_be_bounds_libpq_can_keep(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SUTRA_DATABASE_CONNECT_TIMEOUT", "PT1S")
    with pytest.raises(ValidationError, match="SUTRA_DATABASE_CONNECT_TIMEOUT must be at least 2"):
        Settings()
    monkeypatch.setenv("SUTRA_DATABASE_CONNECT_TIMEOUT", "PT3S")
    monkeypatch.setenv("SUTRA_DATABASE_STATEMENT_TIMEOUT", "PT0S")
    with pytest.raises(ValidationError, match="SUTRA_DATABASE_STATEMENT_TIMEOUT must be longer"):
        Settings()
    monkeypatch.setenv("SUTRA_DATABASE_STATEMENT_TIMEOUT", "PT30S")

    settings = Settings()

    assert settings.database_connect_timeout.total_seconds() == 3
    assert settings.database_statement_timeout.total_seconds() == 30


def test_database_url_must_be_postgres():
    with pytest.raises(ValueError, match="PostgreSQL"):
        _ = Settings(database_url="mysql://u@db/sutra").sqlalchemy_url
