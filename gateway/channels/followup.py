"""回访 (follow-up): the pure decisions. When an agent submits a ticket with an `answer` for the
citizen, the answer goes back on the citizen's channel with the satisfaction question; the
citizen's next message on that channel within `[followup] timeout` is their rating.

- `route`: where the answer goes (the ticket's own message channel; a voice ticket by SMS to the
  caller's mobile when SMS is enabled), or why it goes nowhere (a web form has no channel back, a
  landline gets no SMS, a channel not enabled here has no sender).
- `question`: the text sent (the answer, then the question).
- `read_rating`: a reply read as a rating: the digits 1/2/3 (full-width too), the words (满意,
  基本满意, 不满意 and their usual variants), with spaces, punctuation and a closing particle around.
  Anything else is the citizen's comment: recorded on the ticket as `unrated` (未评价), not asked
  again and not reopened. A hotline asks once; a comment is read by its quality team, and a
  citizen who is not satisfied answers 3 or 不满意, which the question offers.
- `answered` / `unanswered`: the ticket after a reply or after the timeout; 不满意 reopens it
  (重办: back to its queue, flagged `reopened`, its answer moved to the history).
- `overdue_before`: asked before this moment and not answered: recorded as no answer.

Ratings are the names the voice survey gives (config/flows/12345.toml: satisfied, basic,
unsatisfied), so one report counts both.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from gateway.ticket import Channel, Ticket, conversation_identity

Rating = Literal["satisfied", "basic", "unsatisfied"]
# What the ticket's `satisfaction` says after a follow-up: a rating, a comment, or silence.
Outcome = Literal["satisfied", "basic", "unsatisfied", "unrated", "no_answer"]

REOPENED_FLAG = "reopened"
QUESTION = "【12345回访】请回复数字评价本次办理: 1 满意  2 基本满意  3 不满意"
SEPARATOR = "\n"

_DIGITS: dict[str, Rating] = {"1": "satisfied", "2": "basic", "3": "unsatisfied"}
_WORDS: dict[str, Rating] = {
    **dict.fromkeys(("满意", "很满意", "非常满意", "十分满意", "特别满意", "挺满意"), "satisfied"),
    **dict.fromkeys(("基本满意", "比较满意", "还算满意", "一般", "还行", "还可以"), "basic"),
    **dict.fromkeys(
        ("不满意", "不太满意", "不大满意", "很不满意", "非常不满意", "十分不满意", "不满", "不是很满意"),
        "unsatisfied",
    ),
}
# What may close a short reply without changing it: 满意的, 满意了, 满意啊...
_PARTICLES = "的了啊呀吧哦噢呢嘛"
_DIGIT_THEN_WORD = re.compile(r"^([123])(\D*)$")

# A mainland mobile number (optionally with the country code): what an SMS can reach.
_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9][0-9]{9})$")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a ticket's answer goes: `channel`'s outbox, to `identity` (the citizen as that
    channel names them); or nowhere (`channel` None), `reason` saying why."""

    channel: Channel | None
    identity: str = ""
    reason: str = ""


def question(answer: str) -> str:
    """What the citizen receives: the agent's answer, then the question."""
    return f"{answer.strip()}{SEPARATOR}{QUESTION}"


def mobile_number(phone: str | None) -> str | None:
    """The number an SMS reaches, as the SMS channel names a citizen (no country code), or None."""
    found = _MOBILE.match(phone or "")
    return found.group(1) if found else None


def route(ticket: Ticket, enabled: frozenset[Channel]) -> Route:
    """Where this ticket's answer goes, given the channels enabled here (see the module)."""
    if ticket.channel == "voice":
        mobile = mobile_number(ticket.citizen.phone)
        if "sms" not in enabled:
            return Route(None, reason="sms_disabled")
        return Route("sms", mobile) if mobile else Route(None, reason="no_mobile_number")
    identity = conversation_identity(ticket)
    if identity is None:
        return Route(None, reason="no_channel_back")
    if ticket.channel not in enabled:
        return Route(None, reason=f"{ticket.channel}_disabled")
    return Route(ticket.channel, identity)


def _bare(text: str) -> str:
    """The reply without what does not change its meaning: width (NFKC makes １ a 1 and ！ a !),
    spaces, punctuation, symbols and a closing particle."""
    normal = unicodedata.normalize("NFKC", text)
    kept = "".join(char for char in normal if unicodedata.category(char)[0] not in "PSZC")
    return kept.rstrip(_PARTICLES) or kept


def read_rating(text: str) -> Rating | None:
    """The rating a reply gives, or None when it gives none (a comment). A digit with a word
    agrees with it or is no rating ("1 满意" is satisfied, "1 不满意" is nothing)."""
    bare = _bare(text)
    if bare in _DIGITS:
        return _DIGITS[bare]
    if bare in _WORDS:
        return _WORDS[bare]
    both = _DIGIT_THEN_WORD.match(bare)
    if both and _WORDS.get(both.group(2)) == _DIGITS[both.group(1)]:
        return _DIGITS[both.group(1)]
    return None


def outcome_of(text: str) -> Outcome:
    return read_rating(text) or "unrated"


def answered(ticket: Ticket, outcome: Outcome) -> Ticket:
    """The ticket once the citizen answered: rated, and reopened (重办) when not satisfied, its
    answer cleared for the next agent to write anew (the history keeps the one sent)."""
    if outcome != "unsatisfied":
        return ticket.model_copy(update={"satisfaction": outcome})
    flags = ticket.flags if REOPENED_FLAG in ticket.flags else (*ticket.flags, REOPENED_FLAG)
    return ticket.model_copy(update={"satisfaction": outcome, "flags": flags, "answer": ""})


def unanswered(ticket: Ticket) -> Ticket:
    return ticket.model_copy(update={"satisfaction": "no_answer"})


def overdue_before(now: datetime, timeout: float) -> datetime:
    """A question asked before this moment and not answered is recorded as no answer."""
    return now - timedelta(seconds=timeout)
