"""PII protection: with SUTRA_PAYLOAD_KEYS set, customer names, phones and emails never
reach Temporal in clear; keys rotate without losing old histories; ops read them through
the codec endpoint the Temporal UI calls."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from config.settings import MissingSecretsError, Settings
from contracts.events import EVENT_ADAPTER
from contracts.lifecycle import LifecycleState
from contracts.names import STATE_QUERY
from contracts.rules import RuleDefinition
from db.models import EventRoute, Message
from services.delivery.dispatcher import Dispatcher
from services.intake.service import ingest
from services.journeys import rules
from services.platform.api_keys import create_key
from services.platform.payload_codec import (
    ENCODING,
    EncryptionCodec,
    PayloadKeyError,
    converter_with,
)
from services.platform.temporal import connect
from tests.conftest import ADMIN_KEY, auth, make_settings, start_api
from tests.factories import customer, eventually, now_iso, uid
from worker import build_worker
from workflows import registry


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


KEY_A = f"A:{_key()}"
KEY_B = f"B:{_key()}"


@dataclass
class Written:
    """A journey of a customer with recognisable PII, run with every payload under key A."""

    customer_id: str
    pii: dict[str, str]
    workflow_id: str
    history: WorkflowHistory
    codec_client: Client
    plain_client: Client


def _payloads(message: ProtoMessage) -> Iterator[Payload]:
    """Every Payload anywhere inside a history event (inputs, results, memo, summaries,
    failures, search attributes)."""
    if isinstance(message, Payload):
        yield message
        return
    for _, value in message.ListFields():
        if isinstance(value, ProtoMessage):
            entries: Any = [value]
        elif hasattr(value, "values") and callable(value.values):  # a map
            entries = value.values()
        elif isinstance(value, (str, bytes, int, float, bool)):
            continue
        else:  # repeated
            entries = value
        for entry in entries:
            if isinstance(entry, ProtoMessage):
                yield from _payloads(entry)


async def _deliver(dispatcher: Dispatcher, sessionmaker: Any, event_id: str) -> list[str]:
    """Deliver one stored event's routes as the dispatcher would; the workflow ids."""
    started = []
    async with sessionmaker() as session, session.begin():
        rows = (
            await session.scalars(
                select(EventRoute)
                .where(EventRoute.event_id == event_id, EventRoute.status == "pending")
                .order_by(EventRoute.seq)
                .with_for_update()
            )
        ).all()
        for row in rows:
            row.status = "delivered"
            if row.kind == "signal_query":
                continue
            await dispatcher._deliver({c.name: getattr(row, c.name) for c in row.__table__.columns})
            started.append(row.workflow_id)
    return started


@pytest.fixture(scope="module")
async def written(
    dev_server: WorkflowEnvironment,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Written]:
    task_queue = f"tq-codec-{uid('q')}"
    settings = make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        payload_keys=KEY_A,
    )
    codec_client = await connect(settings)  # the worker's and the API's own connection
    plain_client = dev_server.client  # what anyone reading Temporal's storage sees
    customer_id = uid("c")
    pii = {
        "email": f"zarmeen.{customer_id}@example.com",
        "phone": "+92300" + "".join(secrets.choice("0123456789") for _ in range(7)),
        "name": f"Zarmeen {customer_id[-6:]} Qureshi",
    }
    actor = rules.Actor(key_id=None, name="tests")
    async with sessionmaker() as session, session.begin():
        rule, _ = await rules.create(
            session,
            RuleDefinition.model_validate(
                {
                    "name": "codec welcome",
                    "trigger": {"event": "customer.created"},
                    "conditions": {"field": "customer.id", "op": "eq", "value": customer_id},
                    "steps": [{"send": {"channels": ["email"], "template": "welcome"}}],
                    "quiet_hours": None,
                    "reentry": {"policy": "once"},
                }
            ),
            actor,
            status="active",
        )
        rule_id = rule.id
    event = EVENT_ADAPTER.validate_python(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": now_iso(),
            "customer": customer(customer_id, **pii),
            "data": {},
        }
    )
    started: list[str] = []
    async with build_worker(codec_client, task_queue, sessionmaker, settings):
        async with sessionmaker() as session, session.begin():
            await ingest(session, [event], settings=settings, api_key_id=None)
        started = await _deliver(
            Dispatcher(settings, sessionmaker, codec_client), sessionmaker, event.id
        )

        async def sent() -> bool:
            async with sessionmaker() as session:
                return bool(
                    (
                        await session.scalars(
                            select(Message.id).where(
                                Message.customer_id == customer_id,
                                Message.status.in_(("sent", "delivered")),
                            )
                        )
                    ).first()
                )

        await eventually(sent, within=30, what="the welcome email to be sent")
        [workflow_id] = [w for w in started if rule_id in w]  # other tests' rules start too
        history = await plain_client.get_workflow_handle(workflow_id).fetch_history()
        yield Written(customer_id, pii, workflow_id, history, codec_client, plain_client)
        for wid in started:
            with contextlib.suppress(RPCError):
                await plain_client.get_workflow_handle(wid).terminate()
    async with sessionmaker() as session, session.begin():
        await rules.transition(session, rule_id, "archived", actor)


# (a) Nothing readable in Temporal; the codec client reads it all.


async def test_no_customer_data_is_stored_in_clear_in_temporal(written: Written):
    needles = [v.encode() for v in written.pii.values()]
    payloads: list[Payload] = []
    for event in written.history.events:
        raw = event.SerializeToString()
        for needle in needles:
            assert needle not in raw, f"{needle!r} in clear in {event.event_type}"
        payloads += list(_payloads(event))
    encrypted = [p for p in payloads if p.metadata.get("encoding") == ENCODING]
    assert encrypted, "no encrypted payloads in the history"
    assert {p.metadata["encryption-key-id"] for p in encrypted} == {b"A"}
    # What is not encrypted is what Temporal itself must read: the search attributes.
    clear = [p for p in payloads if p.metadata.get("encoding") != ENCODING]
    assert clear
    assert all(p.metadata.get("encoding") == b"json/plain" for p in clear)

    codec = written.codec_client.data_converter.payload_codec
    assert codec is not None
    decoded = b"".join(p.data for p in await codec.decode(payloads))
    for needle in needles:
        assert needle in decoded


async def test_the_codec_client_reads_queries_summaries_and_search_attributes(written: Written):
    handle = written.codec_client.get_workflow_handle(written.workflow_id)
    state = await handle.query(STATE_QUERY, result_type=LifecycleState)
    assert state.customer_id == written.customer_id
    description = await handle.describe()
    rule_id = written.workflow_id.split("/")[1]  # journey/{rule_id}/{customer_id}
    assert await description.static_summary() == (
        f"customer.created journey of customer {written.customer_id} on rule {rule_id}"
    )
    pairs = {p.key.name: p.value for p in description.typed_search_attributes}
    assert pairs["CustomerId"] == written.customer_id

    # Without the key: search attributes (ids) still work, the payloads do not decode.
    plain = written.plain_client.get_workflow_handle(written.workflow_id)
    plain_pairs = {p.key.name: p.value for p in (await plain.describe()).typed_search_attributes}
    assert plain_pairs["CustomerId"] == written.customer_id
    with pytest.raises(Exception, match="binary/encrypted"):
        await plain.query(STATE_QUERY, result_type=LifecycleState)


# (b) Rotation.


async def test_a_history_written_under_a_old_key_replays_after_rotation(written: Written):
    rotated = converter_with(EncryptionCodec.from_spec(f"{KEY_B},{KEY_A}"))
    result = await Replayer(workflows=registry.ALL, data_converter=rotated).replay_workflow(
        written.history
    )
    assert result.replay_failure is None


async def test_dropping_the_old_key_too_early_fails_clearly(
    written: Written, caplog: pytest.LogCaptureFixture
):
    only_b = converter_with(EncryptionCodec.from_spec(KEY_B))
    with pytest.raises(Exception, match="PayloadKeyError"):
        await Replayer(workflows=registry.ALL, data_converter=only_b).replay_workflow(
            written.history
        )
    # The worker's log says which key is missing (the task failure itself is encrypted).
    assert "payload encrypted with key id 'A', which is not configured" in caplog.text


async def test_the_new_key_encrypts_and_the_old_key_alone_cannot_read_it():
    rotated = EncryptionCodec.from_spec(f"{KEY_B},{KEY_A}")
    old_only = EncryptionCodec.from_spec(KEY_A)
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email":"a@example.com"}')

    [under_a] = await old_only.encode([plain])
    [under_b] = await rotated.encode([plain])
    assert under_b.metadata["encryption-key-id"] == b"B"
    assert b"a@example.com" not in under_b.data
    assert await rotated.decode([under_a, under_b]) == [plain, plain]
    with pytest.raises(PayloadKeyError, match=r"key id 'B'.*not configured"):
        await old_only.decode([under_b])

    # Histories recorded before encryption was switched on decode untouched.
    assert await old_only.decode([plain]) == [plain]
    # A payload whose key id was swapped does not decrypt under the other key.
    forged = Payload()
    forged.CopyFrom(under_b)
    forged.metadata["encryption-key-id"] = b"A"
    with pytest.raises(PayloadKeyError, match="does not decrypt"):
        await rotated.decode([forged])


# (c) The codec endpoint.


@pytest.fixture
async def codec_api(database_url: str, dev_server: WorkflowEnvironment, task_queue: str):
    settings = make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        payload_keys=f"{KEY_B},{KEY_A}",
        dispatcher_enabled=False,
    )
    api, manager = await start_api(settings)
    yield api
    await api.http.aclose()
    await manager.__aexit__(None, None, None)


def _json(payloads: list[Payload]) -> dict[str, Any]:
    return json_format.MessageToDict(Payloads(payloads=payloads))


def _parse(body: bytes) -> list[Payload]:
    return list(json_format.Parse(body, Payloads()).payloads)


async def _key_with(sessionmaker: Any, scopes: list[str]) -> str:
    async with sessionmaker() as session, session.begin():
        _, plaintext = await create_key(session, name="codec test", scopes=scopes, created_by=None)
    return plaintext


UI = "http://127.0.0.1:8233"


async def test_the_codec_endpoint_decodes_for_ops(codec_api, written: Written, sessionmaker):
    encrypted = [
        p
        for e in written.history.events
        for p in _payloads(e)
        if p.metadata.get("encoding") == ENCODING
    ]
    ops = await _key_with(sessionmaker, ["ops"])
    headers = {**auth(ops), "X-Namespace": "default", "Origin": UI}

    response = await codec_api.http.post("/codec/decode", json=_json(encrypted), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == UI
    assert response.headers["access-control-allow-credentials"] == "true"
    decoded = b"".join(p.data for p in _parse(response.content))
    for value in written.pii.values():
        assert value.encode() in decoded

    # encode then decode round-trips, under the newest key (B).
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"Ayesha"')
    response = await codec_api.http.post("/codec/encode", json=_json([plain]), headers=headers)
    assert response.status_code == 200, response.text
    [sealed] = _parse(response.content)
    assert sealed.metadata["encryption-key-id"] == b"B"
    response = await codec_api.http.post("/codec/decode", json=_json([sealed]), headers=headers)
    assert _parse(response.content) == [plain]

    # An admin key carries ops too.
    response = await codec_api.http.post(
        "/codec/decode", json=_json([sealed]), headers={**auth(ADMIN_KEY), "Origin": UI}
    )
    assert response.status_code == 200


async def test_the_codec_endpoint_refuses_without_ops(codec_api, sessionmaker):
    body = _json([Payload(metadata={"encoding": b"json/plain"}, data=b"1")])

    response = await codec_api.http.post("/codec/decode", json=body, headers={"Origin": UI})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "access-control-allow-origin" not in response.headers

    writer = await _key_with(sessionmaker, ["events:write"])
    response = await codec_api.http.post("/codec/decode", json=body, headers=auth(writer))
    assert response.status_code == 403
    assert "ops" in response.json()["detail"]

    # The development UI's key-in-path form checks the same key and scope.
    response = await codec_api.http.post(f"/codec/k/{writer}/decode", json=body)
    assert response.status_code == 403
    response = await codec_api.http.post("/codec/k/sutra_nope/decode", json=body)
    assert response.status_code == 401
    ops = await _key_with(sessionmaker, ["ops"])
    response = await codec_api.http.post(f"/codec/k/{ops}/decode", json=body)
    assert response.status_code == 200
    assert _parse(response.content)[0].data == b"1"

    # Another namespace's payloads are not ours to decode; garbage is a 400.
    response = await codec_api.http.post(
        "/codec/decode", json=body, headers={**auth(ops), "X-Namespace": "other"}
    )
    assert response.status_code == 400
    response = await codec_api.http.post(
        "/codec/decode", content=b'{"payloads": 7}', headers=auth(ops)
    )
    assert response.status_code == 400

    # A payload under a key this installation does not have: a clear 422.
    stranger = EncryptionCodec.from_spec(f"C:{_key()}")
    [foreign] = await stranger.encode([Payload(data=b"1")])
    response = await codec_api.http.post("/codec/decode", json=_json([foreign]), headers=auth(ops))
    assert response.status_code == 422
    assert "key id 'C'" in response.json()["detail"]


async def test_cors_preflight_answers_only_the_temporal_ui(codec_api):
    preflight = {
        "Origin": UI,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    for path in ("/codec/decode", "/codec/encode", "/codec/k/anything/decode"):
        response = await codec_api.http.options(path, headers=preflight)
        assert response.status_code in (200, 204), path
        assert response.headers["access-control-allow-origin"] == UI
        assert response.headers["access-control-allow-credentials"] == "true"
        allowed = response.headers["access-control-allow-headers"].lower()
        assert {"content-type", "x-namespace", "authorization"} <= {
            h.strip() for h in allowed.split(",")
        }
        assert "POST" in response.headers["access-control-allow-methods"]

    foreign = {**preflight, "Origin": "https://evil.example"}
    response = await codec_api.http.options("/codec/decode", headers=foreign)
    assert "access-control-allow-origin" not in response.headers
    response = await codec_api.http.post(
        "/codec/decode",
        json=_json([]),
        headers={**auth(ADMIN_KEY), "Origin": "https://evil.example"},
    )
    assert "access-control-allow-origin" not in response.headers


async def test_without_keys_the_codec_passes_payloads_through(api):
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')
    for path in ("/codec/decode", "/codec/encode"):
        response = await api.http.post(path, json=_json([payload]), headers=auth(ADMIN_KEY))
        assert response.status_code == 200
        assert _parse(response.content) == [payload]


# (d) Settings.


def test_a_key_of_the_wrong_length_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
):
    short = base64.b64encode(os.urandom(20)).decode()
    monkeypatch.setenv("SUTRA_PAYLOAD_KEYS", f"k1:{short}")
    with pytest.raises(ValidationError, match=r"SUTRA_PAYLOAD_KEYS key 'k1' is 20 bytes"):
        Settings()
    with pytest.raises(ValidationError, match="SUTRA_PAYLOAD_KEYS entry 1 must be"):
        Settings(payload_keys=_key())
    with pytest.raises(ValidationError, match="SUTRA_PAYLOAD_KEYS key 'k1' is not valid base64"):
        Settings(payload_keys="k1:not*base64")
    with pytest.raises(ValidationError, match="names key id 'k1' twice"):
        Settings(payload_keys=f"k1:{_key()},k1:{_key()}")


def test_keys_are_read_from_the_environment_newest_first(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SUTRA_PAYLOAD_KEYS", f"{KEY_B}, {KEY_A}")
    settings = Settings()
    assert [kid for kid, _ in settings.payload_key_list] == ["B", "A"]
    assert all(len(key) == 32 for _, key in settings.payload_key_list)
    assert "A:" not in repr(settings)  # a secret: never printed
    monkeypatch.delenv("SUTRA_PAYLOAD_KEYS")
    assert Settings().payload_key_list == []


def test_production_requires_payload_keys():
    with pytest.raises(MissingSecretsError, match="SUTRA_PAYLOAD_KEYS"):
        Settings(
            env="production",
            secret_key="s" * 40,
            database_url="postgresql://u@db/sutra",
            outbox_channels="email,sms,whatsapp",
        )
    settings = Settings(
        env="production",
        secret_key="s" * 40,
        database_url="postgresql://u@db/sutra",
        outbox_channels="email,sms,whatsapp",
        payload_keys=KEY_A,
    )
    assert settings.payload_key_list[0][0] == "A"
