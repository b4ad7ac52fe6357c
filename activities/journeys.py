"""Activities of journeys: entering a rule, fresh customer data, coupons, exits, credit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.clock import server_now
from config.settings import Settings
from contracts.journeys import (
    ATTRIBUTE_ORDER,
    CUSTOMER_CONTEXT,
    ENTER_JOURNEY,
    EXIT_JOURNEY,
    ISSUE_COUPON,
    REVOKE_COUPON,
    SUPERSEDE_COUPONS,
    AttributeOrderInput,
    AttributeOrderResult,
    CustomerContextInput,
    CustomerContextResult,
    EnterJourneyInput,
    EnterJourneyResult,
    ExitJourneyInput,
    IssueCouponInput,
    IssueCouponResult,
    PinnedRule,
    RevokeCouponInput,
)
from services.customers import profiles
from services.journeys import admission, attribution_model, coupons
from services.platform import metrics


class JourneyActivities:
    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker

    @activity.defn(name=ENTER_JOURNEY)
    async def enter_journey(self, input: EnterJourneyInput) -> EnterJourneyResult:
        async with self._sessionmaker() as session, session.begin():
            customer = await profiles.customer_context(session, input.customer_id)
            entry = await admission.enter(
                session,
                trigger=input.trigger,
                customer_id=input.customer_id,
                workflow_id=input.workflow_id,
                cart_id=input.cart_id,
                context={**input.context, "customer": customer},
                now=server_now(),
                only_rule=input.only_rule,
                test=input.test,
            )
        if entry is None:
            return EnterJourneyResult()
        if entry.fresh and not entry.test:  # committed: counted once per journey
            metrics.JOURNEY_STARTS.labels(entry.rule_id).inc()
        return EnterJourneyResult(
            rule=PinnedRule(
                rule_id=entry.rule_id,
                version=entry.version,
                definition=entry.definition,
                holdout=entry.holdout,
            )
        )

    @activity.defn(name=CUSTOMER_CONTEXT)
    async def customer_context(self, input: CustomerContextInput) -> CustomerContextResult:
        async with self._sessionmaker() as session:
            return CustomerContextResult(
                customer=await profiles.customer_context(session, input.customer_id)
            )

    @activity.defn(name=ISSUE_COUPON)
    async def issue_coupon(self, input: IssueCouponInput) -> IssueCouponResult:
        code = None
        if input.source == "shop":
            code = await coupons.mint_at_shop(
                self._settings,
                {
                    "issue_key": input.issue_key,
                    "percent_off": input.percent_off,
                    "customer_id": input.customer_id,
                    "cart_id": input.cart_id,
                    "expires_in_seconds": int(input.expires_in.total_seconds()),
                },
            )
        async with self._sessionmaker() as session, session.begin():
            coupon = await coupons.issue(
                session,
                issue_key=input.issue_key,
                percent_off=input.percent_off,
                expires_in=input.expires_in,
                customer_id=input.customer_id,
                cart_id=input.cart_id,
                rule_id=input.rule_id,
                rule_version=input.rule_version,
                step=input.step,
                now=server_now(),
                code=code,
                source=input.source,
            )
            return IssueCouponResult(
                code=coupon.code, percent_off=coupon.percent_off, expires_at=coupon.expires_at
            )

    @activity.defn(name=REVOKE_COUPON)
    async def revoke_coupon(self, input: RevokeCouponInput) -> bool:
        async with self._sessionmaker() as session, session.begin():
            return await coupons.revoke(session, input.code, input.reason, server_now())

    @activity.defn(name=SUPERSEDE_COUPONS)
    async def supersede_coupons(self, code: str) -> int:
        async with self._sessionmaker() as session, session.begin():
            return await coupons.supersede(session, code, server_now())

    @activity.defn(name=EXIT_JOURNEY)
    async def exit_journey(self, input: ExitJourneyInput) -> None:
        async with self._sessionmaker() as session, session.begin():
            exited = await admission.record_exit(
                session, input.workflow_id, input.rule_id, input.reason, server_now()
            )
            test = exited is None or exited.test
        if not test:
            metrics.JOURNEY_EXITS.labels(input.rule_id, input.reason).inc()

    @activity.defn(name=ATTRIBUTE_ORDER)
    async def attribute_order(self, input: AttributeOrderInput) -> AttributeOrderResult:
        """Credit the order under the attribution model in force, and record it as the
        goal of the journey that asks (held out or not: what holdout lift compares)."""
        info = activity.info()
        async with self._sessionmaker() as session, session.begin():
            credit = await attribution_model.credit(
                session,
                self._settings,
                workflow_id=info.workflow_id or "",
                run_id=info.workflow_run_id,
                order_id=input.order_id,
                customer_id=input.customer_id,
                cart_id=input.cart_id,
            )
        if credit is None:
            return AttributeOrderResult()
        return AttributeOrderResult(
            message_id=str(credit.message_id) if credit.message_id else None,
            rule_id=credit.rule_id,
            step=credit.step,
            revenue=str(credit.revenue),
            discount=str(credit.discount),
        )

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.enter_journey,
            self.customer_context,
            self.issue_coupon,
            self.revoke_coupon,
            self.supersede_coupons,
            self.exit_journey,
            self.attribute_order,
        ]
