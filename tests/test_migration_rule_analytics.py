"""Migration 0010 gives the ledger's suppressed messages recorded before it their reason in
one word, and unsubscribe links' suppressions the message that carried the link."""

from __future__ import annotations

import secrets
import uuid

import psycopg
from alembic import command

from db.migrate import alembic_config
from tests.conftest import create_database, drop_database

REASONS = {
    "frequency_cap": "frequency_cap",
    "no channel can take it: email: no consent; sms: no consent": "consent",
    "no channel can take it: email: suppressed (unsubscribe); sms: suppressed (stop)": "consent",
    "no channel can take it: email: no consent; sms: no address": "no_channel",
    "no channel can take it: email: suppressed (bounce)": "no_channel",
    "unknown customer": "no_channel",
}


def test_old_suppressed_messages_and_unsubscribes_are_given_what_analytics_read(admin_url: str):
    name = f"sutra_migration_{secrets.token_hex(4)}"
    url = create_database(admin_url, name)
    config = alembic_config(url)
    carried = uuid.uuid4()
    try:
        command.upgrade(config, "0009")
        with psycopg.connect(url, autocommit=True) as conn:
            for n, reason in enumerate([*REASONS, "journey ended"]):
                details = '{"deferrals": [{"reason": "quiet_hours"}]}' if n == 6 else "{}"
                conn.execute(
                    "INSERT INTO messages (id, key, customer_id, template, kind, status,"
                    " reason, details) VALUES (%s, %s, 'c', 't', 'marketing', 'suppressed',"
                    " %s, %s::jsonb)",
                    (uuid.uuid4(), f"k{n}", reason, details),
                )
            conn.execute(
                "INSERT INTO suppressions (channel, address, scope, reason, source, detail)"
                " VALUES ('email', 'a@example.com', 'marketing', 'unsubscribe',"
                " 'unsubscribe_link', %s), ('email', 'b@example.com', 'all', 'bounce',"
                " 'sendgrid', 'message 1')",
                (f"message {carried}",),
            )
        command.upgrade(config, "head")
        with psycopg.connect(url) as conn:
            codes: dict[str, str | None] = dict(
                conn.execute("SELECT reason, details ->> 'suppressed' FROM messages").fetchall()
            )
            linked = conn.execute(
                "SELECT address, message_id FROM suppressions ORDER BY address"
            ).fetchall()
    finally:
        drop_database(admin_url, name)

    assert codes == {**REASONS, "journey ended": "abandoned"}
    assert linked == [("a@example.com", carried), ("b@example.com", None)]
