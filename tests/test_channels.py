"""The channel adapters drive the real SendGrid and Twilio SDKs against local fakes that
check every request against the providers' own OpenAPI documents."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from channels.base import OutgoingMessage, PermanentSendError, TransientSendError
from channels.sendgrid_email import SendGridEmail
from channels.twilio_messaging import TwilioMessaging
from config.settings import Environment, Settings
from tests.provider_reports import phone
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from tests.providers.storm import Phase


def _settings(**values: object) -> Settings:
    return Settings(env=Environment.test, **values)  # type: ignore[arg-type]


def sendgrid(fake: FakeSendGrid, **values: object) -> SendGridEmail:
    return SendGridEmail(
        _settings(
            sendgrid_api_key=fake.api_key,
            sendgrid_host=fake.url,
            email_from="orders@shop.example",
            email_from_name="Sutra Demo Shop",
            sendgrid_asm_group_id=4242,
            **values,
        )
    )


def twilio(fake: FakeTwilio, channel: str = "sms") -> TwilioMessaging:
    return TwilioMessaging(
        _settings(
            twilio_account_sid=fake.account_sid,
            twilio_auth_token=fake.auth_token,
            twilio_api_base_url=fake.base_url,
            twilio_sms_from="+15005550006",
            twilio_whatsapp_from="+14155238886",
        ),
        channel,  # type: ignore[arg-type]
    )


def email(kind: str = "marketing", **values: object) -> OutgoingMessage:
    fields: dict[str, object] = {
        "message_id": uuid.uuid4(),
        "channel": "email",
        "kind": kind,
        "template": "cart_reminder_1",
        "to": "ayesha@example.com",
        "subject": "Forgot something? Your cart is waiting!",
        "text": "Your cart: Rs 4,500.00",
        "html": "<p>Your cart: Rs 4,500.00</p>",
        "unsubscribe_url": "https://sutra.example.com/u/token" if kind == "marketing" else None,
        "categories": ("cart_reminder_1", kind),
    }
    fields.update(values)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def sms(**values: object) -> OutgoingMessage:
    fields: dict[str, object] = {
        "message_id": uuid.uuid4(),
        "channel": "sms",
        "kind": "marketing",
        "template": "cart_reminder_1",
        "to": "+923001234567",
        "text": "Sutra Demo Shop: your cart is waiting. Reply STOP to opt out.",
        "status_callback_url": "https://sutra.example.com/v1/webhooks/twilio/status?message_id=x",
    }
    fields.update(values)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


async def test_marketing_email_request_carries_everything_sendgrid_needs(
    fake_sendgrid: FakeSendGrid,
):
    message = email()

    receipt = await sendgrid(fake_sendgrid).send(message)

    [mail] = fake_sendgrid.requests
    assert receipt.provider_message_id == mail.message_id
    body = mail.json
    assert body["from"] == {"email": "orders@shop.example", "name": "Sutra Demo Shop"}
    assert mail.to == ["ayesha@example.com"]
    assert body["subject"] == "Forgot something? Your cart is waiting!"
    assert mail.content("text/plain") == "Your cart: Rs 4,500.00"
    assert mail.content("text/html") == "<p>Your cart: Rs 4,500.00</p>"
    assert body["personalizations"][0]["custom_args"] == {
        "sutra_message_id": str(message.message_id),
        "sutra_template": "cart_reminder_1",
    }
    assert sorted(body["categories"]) == ["cart_reminder_1", "marketing"]
    assert body["asm"] == {"group_id": 4242}
    assert body["headers"] == {
        "List-Unsubscribe": "<https://sutra.example.com/u/token>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


async def test_transactional_email_has_no_unsubscribe_machinery(fake_sendgrid: FakeSendGrid):
    await sendgrid(fake_sendgrid).send(email(kind="transactional"))

    [mail] = fake_sendgrid.requests
    assert "asm" not in mail.json
    assert "headers" not in mail.json


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, PermanentSendError),
        (403, PermanentSendError),
        (429, TransientSendError),
        (500, TransientSendError),
    ],
)
async def test_sendgrid_errors_are_sorted_permanent_or_transient(
    fake_sendgrid: FakeSendGrid, status: int, error: type[PermanentSendError | TransientSendError]
):
    address = f"{uuid.uuid4().hex}@example.com"  # the fake is the process's: this send only
    fake_sendgrid.fail_next(
        status,
        {"errors": [{"message": "does not contain a valid address", "field": "to", "help": None}]},
        to=address,
    )

    with pytest.raises(error) as caught:
        await sendgrid(fake_sendgrid).send(email(to=address))

    raised = caught.value
    assert isinstance(raised, PermanentSendError | TransientSendError)
    assert raised.code == str(status)
    assert "does not contain a valid address" in raised.message


async def test_a_rate_limited_sendgrid_says_how_long_to_wait_in_seconds_or_as_a_date(
    fake_sendgrid: FakeSendGrid,
):
    fake_sendgrid.start_storm(
        Phase(429, requests=1, retry_after=7),
        Phase(503, requests=1, retry_after=30, http_date=True),
    )
    adapter = sendgrid(fake_sendgrid)

    with pytest.raises(TransientSendError) as limited:
        await adapter.send(email())
    with pytest.raises(TransientSendError) as unavailable:
        await adapter.send(email())

    assert limited.value.retry_after == timedelta(seconds=7)
    assert unavailable.value.retry_after is not None
    assert timedelta(seconds=28) < unavailable.value.retry_after <= timedelta(seconds=30)
    # Both turned the mail away: it may be sent again without asking anyone.
    assert limited.value.not_sent
    assert unavailable.value.not_sent
    assert fake_sendgrid.requests == []


async def test_a_sendgrid_500_is_not_taken_for_a_refusal_since_sendgrid_may_have_the_mail(
    fake_sendgrid: FakeSendGrid,
):
    fake_sendgrid.start_storm(Phase(500, requests=1, accept=True))

    with pytest.raises(TransientSendError) as caught:
        await sendgrid(fake_sendgrid).send(email())

    assert not caught.value.not_sent
    assert caught.value.answered
    assert caught.value.retry_after is None
    assert len(fake_sendgrid.requests) == 1


async def test_sms_request_names_recipient_sender_body_and_callback(fake_twilio: FakeTwilio):
    message = sms()

    receipt = await twilio(fake_twilio).send(message)

    [stored] = fake_twilio.messages
    assert receipt.provider_message_id == stored.sid
    assert stored.form == {
        "To": "+923001234567",
        "From": "+15005550006",
        "Body": message.text,
        "StatusCallback": message.status_callback_url,
    }


async def test_whatsapp_outside_the_window_sends_the_approved_content_template(
    fake_twilio: FakeTwilio,
):
    message = sms(
        channel="whatsapp",
        whatsapp_content_sid="HX" + "b2" * 16,
        whatsapp_variables={"1": "Ayesha", "2": "https://shop.example.com/c/1"},
    )

    await twilio(fake_twilio, "whatsapp").send(message)

    [stored] = fake_twilio.messages
    assert stored.to == "whatsapp:+923001234567"
    assert stored.from_ == "whatsapp:+14155238886"
    assert stored.content_sid == "HX" + "b2" * 16
    assert stored.content_variables == {"1": "Ayesha", "2": "https://shop.example.com/c/1"}
    assert "Body" not in stored.form


@pytest.mark.parametrize(
    ("status", "code", "error", "suppress"),
    [
        (400, 21610, PermanentSendError, "stop"),
        (400, 21211, PermanentSendError, "invalid"),
        (400, 63016, PermanentSendError, None),
        (429, 20429, TransientSendError, None),
        (500, 20500, TransientSendError, None),
    ],
)
async def test_twilio_errors_are_sorted_and_some_suppress(
    fake_twilio: FakeTwilio,
    status: int,
    code: int,
    error: type[PermanentSendError | TransientSendError],
    suppress: str | None,
):
    number = phone()  # the fake is the process's: this send only
    fake_twilio.fail_next(status, code, "injected", to=number)

    with pytest.raises(error) as caught:
        await twilio(fake_twilio).send(sms(to=number))

    raised = caught.value
    assert isinstance(raised, PermanentSendError | TransientSendError)
    assert raised.code == str(code)
    found = getattr(raised, "suppress", None)
    assert (found.reason if found else None) == suppress


async def test_a_cut_off_twilio_send_is_found_again(fake_twilio: FakeTwilio):
    adapter = twilio(fake_twilio)
    since = datetime.now(UTC) - timedelta(seconds=1)
    message = sms()
    other_step = sms(text="Another step's text")
    receipt = await adapter.send(message)

    found = await adapter.find_sent(message, since=since)
    missing = await adapter.find_sent(other_step, since=since)

    assert found is not None
    assert found.provider_message_id == receipt.provider_message_id
    assert missing is None


async def test_a_rate_limited_twilio_says_how_long_to_wait_for_sends_and_lookups(
    fake_twilio: FakeTwilio,
):
    fake_twilio.start_storm(Phase(429, requests=2, retry_after=3))
    adapter = twilio(fake_twilio)
    message = sms()

    with pytest.raises(TransientSendError) as sending:
        await adapter.send(message)
    with pytest.raises(TransientSendError) as looking:
        await adapter.find_sent(message, since=datetime.now(UTC))

    assert sending.value.retry_after == timedelta(seconds=3)
    assert looking.value.retry_after == timedelta(seconds=3)
    assert sending.value.not_sent
    assert fake_twilio.messages == []


async def test_each_concurrent_twilio_error_keeps_its_own_retry_after(fake_twilio: FakeTwilio):
    """The SDK's client is shared by the threads sending at once."""
    fake_twilio.start_storm(*(Phase(429, requests=1, retry_after=n) for n in range(1, 9)))
    adapter = twilio(fake_twilio)

    async def refused(n: int) -> TransientSendError:
        with pytest.raises(TransientSendError) as caught:
            await adapter.send(sms(to=f"+9230012300{n:02d}"))
        return caught.value

    errors = await asyncio.gather(*(refused(n) for n in range(8)))

    answered = {c.to: c.retry_after for c in fake_twilio.calls}
    assert {e.retry_after: answered[f"+9230012300{n:02d}"] for n, e in enumerate(errors)} == {
        timedelta(seconds=s): str(s) for s in range(1, 9)
    }


async def test_a_twilio_500_for_a_message_it_kept_is_found_by_the_lookup(fake_twilio: FakeTwilio):
    fake_twilio.start_storm(Phase(500, requests=1, accept=True))
    adapter = twilio(fake_twilio)
    since = datetime.now(UTC)
    message = sms()

    with pytest.raises(TransientSendError) as caught:
        await adapter.send(message)
    found = await adapter.find_sent(message, since=since)

    assert not caught.value.not_sent  # Twilio may have it: the lookup decides
    assert caught.value.answered
    [kept] = fake_twilio.messages
    assert found is not None
    assert found.provider_message_id == kept.sid


def test_the_fakes_refuse_what_the_providers_would(fake_twilio: FakeTwilio):
    """The checks behind every test above can fail: a misspelt parameter is caught."""
    import httpx

    response = httpx.post(
        f"{fake_twilio.base_url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json",
        data={"To": "+923001234567", "From": "+15005550006", "Body": "x", "StatusCallbak": "y"},
        auth=(fake_twilio.account_sid, fake_twilio.auth_token),
    )

    assert response.status_code == 400
    assert fake_twilio.violations == ["undeclared form field 'StatusCallbak'"]
    fake_twilio.violations.clear()  # seen and expected
