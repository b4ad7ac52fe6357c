"""``/dashboard``: server-rendered pages over the analytics and the message ledger, for a
shop owner who would rather look than read JSON. Thin like api/: parse, authorise, call the
page's data function (``pages.py``), render."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from config.settings import Settings
from contracts.errors import SutraError, Unprocessable
from dashboard import charts, pages
from dashboard.auth import (
    REQUIRED,
    DbSession,
    MissingScope,
    NotSignedIn,
    Signed,
    csrf_ok,
    end_session,
    needs,
    sign_in_token,
    sign_in_token_ok,
    start_session,
)
from dashboard.formatting import Formats
from services.analytics.period import Period, period, shop_zone
from services.platform.api_keys import authenticate

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
STEP_STATUSES = [(s, s.capitalize()) for s in pages.STATUSES]
REASONS = {
    "expired": "Your session has expired. Sign in again.",
    "revoked": "The key this session used was revoked. Sign in with another key.",
    "signed-out": "You are signed out.",
}


def _formats(request: Request) -> Formats:
    settings: Settings = request.app.state.settings
    return Formats(settings.shop_locale, shop_zone(settings))


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    formats = _formats(request)
    settings: Settings = request.app.state.settings
    response = templates.TemplateResponse(
        request,
        name,
        {"f": formats, "shop": settings.shop_name, "locale": formats.locale, **context},
        status_code=status_code,
    )
    return response


class Pages(APIRoute):
    """Renders what a page raises as a page: not signed in (to the sign-in form), a missing
    scope (403 naming it), any ``SutraError`` (its status and detail)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except NotSignedIn as exc:
                why = "revoked" if exc.reason and "revoked" in exc.reason else "expired"
                query = {"next": request.url.path} | ({"why": why} if exc.reason else {})
                response = RedirectResponse(
                    f"/dashboard/sign-in?{urlencode(query)}", status_code=303
                )
                if exc.reason:
                    end_session(response, request.app.state.settings)
                return response
            except MissingScope as exc:
                return render(
                    request,
                    "forbidden.html",
                    {
                        "scope": exc.scope,
                        "key_name": exc.who.principal.name,
                        "who": exc.who.principal,
                        "csrf": exc.who.csrf,
                    },
                    status_code=403,
                )
            except SutraError as exc:
                return render(
                    request,
                    "error.html",
                    {"status": exc.status, "detail": exc.detail},
                    status_code=exc.status,
                )

        return handle


router = APIRouter(prefix="/dashboard", route_class=Pages, include_in_schema=False)
Reader = Annotated[Signed, Depends(needs(REQUIRED))]
Ops = Annotated[Signed, Depends(needs("ops"))]


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")


def _safe_next(target: str | None) -> str:
    # Only a page of the dashboard: never another host ("//evil", "https://...").
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


async def _form(request: Request) -> dict[str, str]:
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _period(request: Request) -> Period:
    settings: Settings = request.app.state.settings
    days: dict[str, date | None] = {}
    for name in ("from", "to"):
        raw = request.query_params.get(name) or None
        try:
            days[name] = date.fromisoformat(raw) if raw else None
        except ValueError:
            raise Unprocessable(
                f"{name}: not a date (YYYY-MM-DD)",
                fields=[{"loc": ["query", name], "msg": "not a date (YYYY-MM-DD)"}],
            ) from None
    return period(days["from"], days["to"], shop_zone(settings))


def _page(who: Signed, active: str, **context: Any) -> dict[str, Any]:
    return {"who": who.principal, "csrf": who.csrf, "active": active, **context}


# --- signing in and out ---------------------------------------------------------------


def _sign_in_page(request: Request, context: dict[str, Any], status_code: int = 200) -> Response:
    settings: Settings = request.app.state.settings
    holder = Response()
    token = sign_in_token(holder, settings)
    page = render(request, "sign_in.html", {**context, "csrf": token}, status_code=status_code)
    page.raw_headers.extend(h for h in holder.raw_headers if h[0] == b"set-cookie")
    return page


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return _sign_in_page(
        request,
        {
            "next": _safe_next(request.query_params.get("next")),
            "notice": REASONS.get(request.query_params.get("why", "")),
        },
    )


@router.post("/sign-in")
async def sign_in(request: Request, session: DbSession) -> Response:
    form = await _form(request)
    target = _safe_next(form.get("next"))
    key = form.get("key", "").strip()

    def again(notice: str, status: int) -> Response:
        return _sign_in_page(request, {"next": target, "error": notice}, status)

    if not sign_in_token_ok(request, form.get("csrf", "")):
        return again("The form had expired. Please sign in again.", 400)
    if not key:
        return again("Enter an API key.", 422)
    principal = await authenticate(session, key, request.app.state.key_cache)
    if principal is None:
        return again("That API key is not valid, or it has been revoked.", 401)
    if not principal.allows(REQUIRED):
        return render(
            request,
            "forbidden.html",
            {"scope": REQUIRED, "key_name": principal.name, "at_sign_in": True},
            status_code=403,
        )
    response = RedirectResponse(target, status_code=303)
    start_session(response, request.app.state.settings, principal)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, who: Reader) -> Response:
    form = await _form(request)
    if not csrf_ok(who, form.get("csrf", "")):
        return render(
            request,
            "error.html",
            {"status": 403, "detail": "The sign-out form did not come from this session."},
            status_code=403,
        )
    response = RedirectResponse("/dashboard/sign-in?why=signed-out", status_code=303)
    end_session(response, request.app.state.settings)
    return response


# --- pages ----------------------------------------------------------------------------


@router.get("")
async def overview(request: Request, session: DbSession, who: Reader) -> Response:
    span = _period(request)
    figures = await pages.overview(session, span)
    formats = _formats(request)
    return render(
        request,
        "overview.html",
        _page(
            who,
            "overview",
            period=span,
            o=figures,
            revenue_chart=charts.revenue_chart(figures, span, formats),
            messages_chart=charts.messages_chart(figures, span, formats),
            channel_names=charts.CHANNEL_NAMES,
        ),
    )


@router.get("/rules")
async def rule_list(request: Request, session: DbSession, who: Reader) -> Response:
    span = _period(request)
    found = await pages.rule_list(session, request.app.state.settings, span)
    return render(request, "rules.html", _page(who, "rules", rules=found, period=span))


@router.get("/rules/{rule_id}")
async def rule_page(request: Request, rule_id: str, session: DbSession, who: Reader) -> Response:
    span = _period(request)
    data = await pages.rule_page(session, request.app.state.settings, rule_id, span)
    t = data["totals"]
    stages = [
        ("Journeys entered", t["entered"]),
        ("Messages sent", t["sent"]),
        ("Delivered", t["delivered"]),
        ("Opened", t["opened"]),
        ("Clicked", t["clicked"]),
        ("Orders attributed", t["conversions"]),
    ]
    return render(
        request,
        "rule.html",
        _page(
            who,
            "rules",
            **data,
            period=span,
            stages=stages,
            funnel_chart=charts.funnel_chart(stages),
            statuses=STEP_STATUSES,
            variant_charts=[charts.variants_chart(e) for e in data["figures"]["experiments"]],
            channel_names=charts.CHANNEL_NAMES,
        ),
    )


@router.get("/payments")
async def payments(request: Request, session: DbSession, who: Reader) -> Response:
    span = _period(request)
    figures = await pages.payments(session, span)
    links, analytics = figures["collections"], figures["analytics"]
    return render(
        request,
        "payments.html",
        _page(
            who,
            "payments",
            period=span,
            p=links,
            a=analytics,
            links_chart=charts.collections_chart(links, span, _formats(request)),
            rto_chart=charts.rto_chart(analytics["payment_types"]),
            payment_type_names=charts.PAYMENT_TYPE_NAMES,
        ),
    )


@router.get("/customers")
async def find_customer(request: Request, who: Ops) -> Response:
    wanted = (request.query_params.get("id") or "").strip()
    if wanted:
        return RedirectResponse(f"/dashboard/customers/{wanted}", status_code=303)
    return render(request, "customer_find.html", _page(who, "customers"))


@router.get("/customers/{customer_id}")
async def customer_journeys(
    request: Request, customer_id: str, session: DbSession, who: Ops
) -> Response:
    data = await pages.journeys(
        session, request.app.state.temporal, request.app.state.settings, customer_id
    )
    return render(request, "journeys.html", _page(who, "customers", **data))


@router.get("/messages")
async def messages(request: Request, session: DbSession, who: Ops) -> Response:
    filters = {
        name: (request.query_params.get(name) or "").strip() or None
        for name in pages.MESSAGE_FILTERS
    }
    data = await pages.messages(session, filters, request.query_params.get("cursor") or None)
    next_query = None
    if data["next_cursor"]:
        next_query = urlencode(
            {k: v for k, v in filters.items() if v} | {"cursor": data["next_cursor"]}
        )
    return render(
        request,
        "messages.html",
        _page(
            who,
            "messages",
            filters=filters,
            next_query=next_query,
            first_query=urlencode({k: v for k, v in filters.items() if v}),
            paged=bool(request.query_params.get("cursor")),
            channel_names=charts.CHANNEL_NAMES,
            **data,
        ),
    )
