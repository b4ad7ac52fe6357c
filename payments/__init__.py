"""Payment providers behind one small interface: Razorpay payment links, Stripe Checkout,
and a sandbox used when a provider has no credentials."""

from __future__ import annotations

from config.settings import Settings
from payments.base import PaymentProvider
from payments.razorpay_links import RazorpayLinks
from payments.sandbox import SandboxPayments
from payments.stripe_checkout import StripeCheckout


def provider_for(settings: Settings, currency: str) -> PaymentProvider:
    """Razorpay for the currencies the policy gives it (INR by default), Stripe for the rest;
    the sandbox stands in for whichever has no credentials."""
    if currency in settings.payment_policy.razorpay_currencies:
        if settings.razorpay_key_id and settings.razorpay_key_secret:
            return RazorpayLinks(settings)
        return SandboxPayments(settings, stands_for="razorpay")
    if settings.stripe_api_key:
        return StripeCheckout(settings)
    return SandboxPayments(settings, stands_for="stripe")


def provider_named(settings: Settings, name: str) -> PaymentProvider:
    if name == "razorpay":
        return RazorpayLinks(settings)
    if name == "stripe":
        return StripeCheckout(settings)
    return SandboxPayments(settings, stands_for=name.removeprefix("sandbox:") or "sandbox")
