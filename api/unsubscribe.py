"""One-click unsubscribe (RFC 8058), from a signed link: no login, no way to forge one."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.deps import SessionDep, SettingsDep
from services.messaging.unsubscribe import opt_out, read_token

router = APIRouter(prefix="/u", tags=["unsubscribe"], include_in_schema=False)

_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family:Arial,sans-serif;max-width:480px;margin:48px auto;padding:0 16px;">
<h1 style="font-size:22px;">{title}</h1><p>{text}</p>{form}</body></html>"""


def _page(title: str, text: str, form: str = "", status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), text=html.escape(text), form=form),
        status_code=status,
        headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"},
    )


_NAMES: dict[str, str] = {
    "email": "emails",
    "sms": "text messages",
    "whatsapp": "WhatsApp messages",
}


@router.get("/{token}")
async def confirm(token: str, settings: SettingsDep) -> HTMLResponse:
    # GET never unsubscribes: mail scanners follow links. The button POSTs.
    parsed = read_token(settings, token)
    if parsed is None:
        return _page("Link not valid", "This unsubscribe link is not valid.", status=404)
    what = _NAMES[parsed.channel]
    button = (
        f'<form method="post" action="/u/{html.escape(token)}">'
        '<button type="submit" style="padding:10px 18px;font-size:16px;">'
        f"Unsubscribe from marketing {what}</button></form>"
    )
    return _page(
        f"Unsubscribe from {settings.shop_name}",
        f"Stop receiving marketing {what} from {settings.shop_name}? "
        "You will still get messages about your orders.",
        button,
    )


@router.post("/{token}")
async def unsubscribe(
    token: str, request: Request, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """The form's button, or a mail client's one-click `List-Unsubscribe=One-Click` POST."""
    parsed = read_token(settings, token)
    if parsed is None:
        return _page("Link not valid", "This unsubscribe link is not valid.", status=404)
    await opt_out(session, parsed)
    return _page(
        "You are unsubscribed",
        f"You will no longer receive marketing {_NAMES[parsed.channel]} from {settings.shop_name}.",
    )
