"""rule analytics: suppressions name the message that caused them; the ledger keeps why a
message was suppressed in one word; indexes for figures over a period

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 10:00:00

Why each index exists (every one serves ``GET /v1/analytics/rules`` and
``/v1/analytics/rules/{id}``, whose queries filter on one rule, or a list of rules, and a
period):

- ``ix_messages_rule_sent_day``: a rule's messages by the day they were sent (or asked for,
  when they never went out): the ``basis=send`` reading of the ledger.
- ``ix_messages_rule_last_event``: a rule's messages with anything (sent, delivered,
  opened, clicked, bounced, failed, suppressed) on or after the period's first day: the
  ``basis=event`` reading, which keeps only those created before its end.
- ``ix_messages_rule_sent_at`` (with ``channel``, ``workflow_id`` and ``id``): messages
  sent per rule and channel for the rules list, and by send date the messages whose orders
  count, both answered from the index alone.
- ``ix_journey_entries_rule_entered_at`` / ``_exited_at``: a rule's journeys entered, and
  ended, in the period; the first carries every column the figures count, so entries are
  read from the index alone.
- ``ix_journey_entries_test_runs``: test runs are left out of every figure, by a probe per
  message row (or a hash of the few test journeys) instead of a scan of every journey.
- ``ix_attributions_rule_ordered_at``: a rule's orders placed in the period (event basis).
- ``ix_suppressions_message_id``: the unsubscribes a rule's messages caused.
- ``ix_message_events_spamreport_at``: the spam complaints of a period (event basis); by
  send date they are found through ``ix_message_events_message_id``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LAST_EVENT = (
    "greatest(created_at, updated_at, sent_at, delivered_at, opened_at, clicked_at, failed_at)"
)

# Every channel refused because the customer said no (policy.py's words for it).
_CONSENT_ONLY = (
    r"^no channel can take it: ([a-z]+: (no consent|suppressed "
    r"\((unsubscribe|group_unsubscribe|stop|spamreport)\))(; |$))+$"
)


def upgrade() -> None:
    op.add_column("suppressions", sa.Column("message_id", postgresql.UUID(), nullable=True))
    # Unsubscribe links always said which message carried them, in words.
    op.execute(
        """
        UPDATE suppressions SET message_id = substring(detail from 9)::uuid
        WHERE source = 'unsubscribe_link'
          AND detail ~ '^message [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
        """
    )
    # Suppressed messages recorded before the reason was kept in one word.
    op.execute(
        sa.text(
            """
        UPDATE messages SET details = details || jsonb_build_object('suppressed',
            CASE
              WHEN reason = 'frequency_cap' THEN 'frequency_cap'
              WHEN reason ~ :consent_only THEN 'consent'
              WHEN deferred_until IS NULL AND details ? 'deferrals'
                   AND reason NOT LIKE 'no channel can take it:%' THEN 'abandoned'
              ELSE 'no_channel'
            END)
        WHERE status = 'suppressed' AND NOT details ? 'suppressed'
        """
        ).bindparams(consent_only=_CONSENT_ONLY)
    )
    op.create_index(
        "ix_suppressions_message_id",
        "suppressions",
        ["message_id"],
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.create_index(
        "ix_messages_rule_sent_day",
        "messages",
        ["rule_id", sa.text("coalesce(sent_at, created_at)")],
        postgresql_where=sa.text("rule_id IS NOT NULL"),
    )
    op.create_index(
        "ix_messages_rule_last_event",
        "messages",
        ["rule_id", sa.text(_LAST_EVENT)],
        postgresql_where=sa.text("rule_id IS NOT NULL"),
    )
    op.create_index(
        "ix_messages_rule_sent_at",
        "messages",
        ["rule_id", "sent_at"],
        postgresql_include=["channel", "workflow_id", "id"],
        postgresql_where=sa.text("rule_id IS NOT NULL AND sent_at IS NOT NULL"),
    )
    op.create_index(
        "ix_message_events_spamreport_at",
        "message_events",
        ["occurred_at"],
        postgresql_where=sa.text("status = 'spamreport'"),
    )
    op.create_index(
        "ix_journey_entries_rule_entered_at",
        "journey_entries",
        ["rule_id", "entered_at"],
        postgresql_include=[
            "rule_version",
            "variant",
            "customer_id",
            "test",
            "exit_reason",
            "exited_at",
        ],
    )
    op.create_index(
        "ix_journey_entries_rule_exited_at",
        "journey_entries",
        ["rule_id", "exited_at"],
        postgresql_where=sa.text("exited_at IS NOT NULL"),
    )
    op.create_index(
        "ix_journey_entries_test_runs",
        "journey_entries",
        ["rule_id", "workflow_id"],
        postgresql_where=sa.text("test"),
    )
    op.create_index("ix_attributions_rule_ordered_at", "attributions", ["rule_id", "ordered_at"])


def downgrade() -> None:
    op.drop_index("ix_attributions_rule_ordered_at", table_name="attributions")
    op.drop_index("ix_journey_entries_test_runs", table_name="journey_entries")
    op.drop_index("ix_journey_entries_rule_exited_at", table_name="journey_entries")
    op.drop_index("ix_journey_entries_rule_entered_at", table_name="journey_entries")
    op.drop_index("ix_message_events_spamreport_at", table_name="message_events")
    op.drop_index("ix_messages_rule_sent_at", table_name="messages")
    op.drop_index("ix_messages_rule_last_event", table_name="messages")
    op.drop_index("ix_messages_rule_sent_day", table_name="messages")
    op.drop_index("ix_suppressions_message_id", table_name="suppressions")
    op.drop_column("suppressions", "message_id")
