"""Paging the supervisors (issue #15, item 4): sensitive words at the top severity page the
supervisors on duty at once, by SMS, through the channel's outbox.

Pure: who is paged and with what text. Triage writes the pages in the transaction that amends the
ticket with its alerts (gateway/triage/service.py), as entries of `hg:outbox:{channel}` (`Reply`
with `kind` `page`, `agent` `triage`): the channel's sender delivers them as it delivers replies,
with its retries, and records each page's state in the ticket's history (`page_sent`,
`page_failed`, then `delivered`), never in the citizen's conversation. The amend's `triaged` guard
makes each page go once: a repeat after a crash writes nothing.

The text names the ticket, its queue and what was found (category and severity), never the
citizen's words or number: an SMS crosses the carrier's network; the supervisor reads the rest on
the wallboard.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import PagingSettings
from gateway.messages import Reply
from gateway.ticket import Citizen, SensitiveAlert, Ticket

ACTOR = "triage"  # the `agent` of a page in the outbox
CATEGORY_NAMES = {
    "self_harm": "自伤自杀",
    "violence": "暴力伤害",
    "mass_incident": "群体性事件",
    "public_safety": "公共安全",
    "extreme_demand": "极端诉求",
    "minor_at_risk": "未成年人风险",
}


def paged_alerts(alerts: Iterable[SensitiveAlert], settings: PagingSettings) -> tuple[SensitiveAlert, ...]:
    """The alerts severe enough to page for."""
    return tuple(alert for alert in alerts if alert.severity >= settings.min_severity)


def page_text(ticket: Ticket, alerts: tuple[SensitiveAlert, ...]) -> str:
    """What a supervisor's phone shows (one SMS part: at most 70 characters)."""
    worst = max(alert.severity for alert in alerts)
    kinds = "、".join(dict.fromkeys(CATEGORY_NAMES.get(alert.category, alert.category) for alert in alerts))
    return f"【12345预警】工单{ticket.id[-8:]}（{ticket.queue}）发现{kinds}{worst}级敏感内容，请立即处置。"


def pages(
    ticket: Ticket, settings: PagingSettings, found: tuple[SensitiveAlert, ...] | None = None
) -> tuple[Reply, ...]:
    """The pages owed for the sensitive words triage just `found` on a ticket (None: all its
    alerts): one per supervisor's phone, none when paging is off or nothing is severe enough."""
    severe = paged_alerts(ticket.alerts if found is None else found, settings)
    if not (settings.active and severe):
        return ()
    text = page_text(ticket, severe)
    return tuple(
        Reply(ticket.id, "sms", Citizen(phone=phone), text, ACTOR, kind="page") for phone in settings.phones
    )
