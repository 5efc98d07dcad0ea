"""Every Redis key and Pub/Sub channel the gateway uses, named here and nowhere else.

`Keys(prefix)` builds them all (`prefix` is `[redis] key_prefix`); docs/redis-keys.md lists each
one, what it holds and what bounds it, and a test keeps the two equal. Two shapes are also spelled
in Lua, where Python cannot build them: the offer script makes the queue streams of an agent's
queues (`{prefix}:q:{queue}:{priority}`) and several scripts read a ticket's id back out of its
key (`:t:`); a test holds `gateway/queue/scripts.py` to the shapes made here. The JOIN script,
which learns the ticket from the conversation key, names its conversation list (`:t:{id}:m`).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass


def process_id() -> str:
    """This process's name among Redis consumers and writers (a consumer group's consumer, a
    wallboard's presence): its host and pid, and a suffix, as two gateways in one process (tests)
    are two writers."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def reply_text(value: object) -> str:
    """A value Redis sent back (a key, a field, a stream id: bytes from a client without
    decode_responses), as text: the way back of what this module names."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    # --- tickets and queues (gateway/queue/store.py) --------------------------------------------

    def ticket(self, ticket_id: str) -> str:
        return f"{self.prefix}:t:{ticket_id}"

    def history(self, ticket_id: str) -> str:
        return f"{self.prefix}:t:{ticket_id}:h"

    def messages(self, ticket_id: str) -> str:
        """A message channel's ticket's conversation (the JOIN script also spells it: `tkey .. ':m'`)."""
        return f"{self.prefix}:t:{ticket_id}:m"

    def conversation(self, channel: str, identity: str) -> str:
        """The open ticket a citizen's next message on a channel joins: `{ticket id} {last ms}`."""
        return f"{self.prefix}:conv:{channel}:{identity}"

    def followup(self, channel: str, identity: str) -> str:
        """String: `{ticket id} {asked at, ms}`, the ticket whose 回访 question this citizen's next
        message on `channel` answers (SETTLE; read by JOIN, deleted by FOLLOWUP)."""
        return f"{self.prefix}:followup:{channel}:{identity}"

    @property
    def followups(self) -> str:
        """Sorted set: ticket ids whose 回访 question waits for its answer, by when it was asked."""
        return f"{self.prefix}:followups"

    def idempotency(self, channel: str, message_id: str, client: str | None = None) -> str:
        """Where a channel message id is remembered. An API client's ids are its own (`form-0001`
        means something else to each client): its keys carry its id. The gateway's own ids (call
        ids of voice tickets and their callbacks) are unique by construction and shared by every
        worker and core process, so one call gets one callback whoever files it."""
        if client is not None:
            return f"{self.prefix}:idem:c:{client}:{channel}:{message_id}"
        return f"{self.prefix}:idem:{channel}:{message_id}"

    def stream(self, queue: str, priority: int) -> str:
        """A queue's stream of one priority (the offer script builds these too: see above)."""
        return f"{self.prefix}:q:{queue}:{priority}"

    def agent_tickets(self, agent: str) -> str:
        return f"{self.prefix}:agent:{agent}:tickets"

    def journal(self, agent: str) -> str:
        """Stream: the news frames sent to an agent's seat, by position (gateway/web/journal.py)."""
        return f"{self.prefix}:agent:{agent}:journal"

    @property
    def offers(self) -> str:
        return f"{self.prefix}:offers"

    @property
    def leases(self) -> str:
        return f"{self.prefix}:leases"

    def stats(self, day: str) -> str:
        """A day's counters per queue (`{queue}:answered`, `in_service_level`, `wait_ms`,
        `over_max_wait`, `submitted`, `abandoned`), `day` as YYYYMMDD in the gateway's local time."""
        return f"{self.prefix}:stats:{day}"

    @property
    def created(self) -> str:
        """Every ticket as it is created (`t`, `q` queue, `c` channel), for consumers that must not
        slow intake down (triage, the wallboard): they read it with their own consumer group."""
        return f"{self.prefix}:created"

    @property
    def submitted(self) -> str:
        return f"{self.prefix}:submitted"

    def outbox(self, channel: str) -> str:
        return f"{self.prefix}:outbox:{channel}"

    def reply(self, channel: str, reply_id: str) -> str:
        """A reply the channel's peer took: `ticket`, `parts`, `delivered` (parts), `state`."""
        return f"{self.prefix}:reply:{channel}:{reply_id}"

    def receipt(self, channel: str, peer_id: str) -> str:
        """The reply a part the peer named `peer_id` belongs to (its receipt names the part)."""
        return f"{self.prefix}:receipt:{channel}:{peer_id}"

    def long_sms(self, source: str, dest: str, ref: int, total: int) -> str:
        """Hash: part number -> digest of each part of a long SMS taken (a ticket has it), so the
        parts the peer delivers again after their answers were lost are not taken twice."""
        return f"{self.prefix}:sms:long:{source}:{dest}:{ref}:{total}"

    @property
    def wake(self) -> str:
        return f"{self.prefix}:wake"

    @property
    def news(self) -> str:
        """Pub/Sub: a conversation's new message or a reply's new delivery state, for the seat
        holding the ticket (`gateway.messages.ConversationNews`)."""
        return f"{self.prefix}:news"

    @property
    def control(self) -> str:
        """Pub/Sub: logins and media workers' news for the seats (`gateway.messages`)."""
        return f"{self.prefix}:control"

    # --- the web console (gateway/web/console.py) ----------------------------------------------

    def console_session(self, digest: str) -> str:
        """A console login: `agent`, `csrf`. Named by the SHA-256 of the cookie's value, so what
        Redis holds cannot be replayed as a cookie."""
        return f"{self.prefix}:console:session:{digest}"

    def console_ticket(self, digest: str) -> str:
        """A one-time seat ticket (its SHA-256): the agent it logs in, taken with GETDEL."""
        return f"{self.prefix}:console:ticket:{digest}"

    # --- triage (gateway/triage/service.py) ----------------------------------------------------------

    @property
    def triage_labels(self) -> str:
        """Stream: agents' final categories on submitted tickets, as labelled contacts (`t`,
        `category`, `text`, `suggested`), for the dispatch suggestion to learn from."""
        return f"{self.prefix}:triage:labels"

    def merge_bucket(self, category: str, place: str) -> str:
        """Sorted set: the tickets of one category at one street-level place that may become a
        主单 (`{id} {signature}`, scored by when each was received), trimmed to `[triage.merge]`
        window and `max_bucket` (gateway/triage/merge.py)."""
        return f"{self.prefix}:merge:{category}:{place}"

    def citizen_tickets(self, identity: str) -> str:
        """Sorted set: a citizen's tickets under one identity (`phone:…`, `wechat:…`, `telegram:…`)
        by when each was received, written at intake, the newest `[history] max_tickets` within
        its window (历史工单, 重复来电, 一人多诉)."""
        return f"{self.prefix}:citizen:{identity}"

    # --- the supervisors' wallboard (gateway/web/wallboard.py) -----------------------------------

    def seat_presence(self, agent: str) -> str:
        """Hash: a connected agent's seat as its process sees it (`state`, `since` ms, `host`),
        written on each change, expiring when no process refreshes it (the seat left, the process died)."""
        return f"{self.prefix}:wallboard:seat:{agent}"

    def intake_hours(self, day: str) -> str:
        """Hash: `{channel}:{hour}` -> tickets created that hour of `day` (YYYYMMDD, local time)."""
        return f"{self.prefix}:wallboard:intake:{day}"

    @property
    def processes(self) -> str:
        """Hash: `{host}:{pid}` -> `{config version} {last beat ms}` for each live gateway process."""
        return f"{self.prefix}:wallboard:processes"

    # --- media workers (gateway/voice/link.py) and the SIP front ------------------------------

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def worker_tickets(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}:tickets"

    def inbox(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}:inbox"

    @property
    def dead_workers(self) -> str:
        """Stream of settled dead workers, for the SIP front to end their dialogs."""
        return f"{self.prefix}:workers:dead"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}:metrics"

    @property
    def transcripts(self) -> str:
        return f"{self.prefix}:transcripts"

    @property
    def alerts(self) -> str:
        """Stream of sensitive-word alerts (`Alerted`), for the supervisors' wallboard."""
        return f"{self.prefix}:alerts"

    def surge(self, category: str, place: str) -> str:
        """Sorted set: tickets of a category at a place (`district/street` or `district`) by time."""
        return f"{self.prefix}:surge:{category}:{place}"

    def surge_warned(self, category: str, place: str) -> str:
        """String: a surge of this category at this place was told within the window."""
        return f"{self.prefix}:surge:warned:{category}:{place}"

    @property
    def surges(self) -> str:
        """Stream of surge warnings (`SurgeWarning`), for the supervisors' wallboard."""
        return f"{self.prefix}:surges"

    @property
    def clocks(self) -> str:
        """Sorted set: open tickets with a resolve deadline, scored by when it turns yellow (ms)."""
        return f"{self.prefix}:clocks"

    @property
    def said(self) -> str:
        """Stream: a triaged ticket's citizen said more (`t`: the ticket, `s`: `transcript` or
        `message`), for triage to look for sensitive words in it (the group `triage-said`)."""
        return f"{self.prefix}:said"

    @property
    def escalate(self) -> str:
        """Sorted set: open tickets whose clocks may owe a 督办 event, scored by when the next one
        falls due (ms): what the escalation loop takes (gateway/triage/escalate.py)."""
        return f"{self.prefix}:escalate"

    @property
    def escalation_news(self) -> str:
        """Pub/Sub: a 督办 event just sent (`Escalated`), for the seat holding its ticket."""
        return f"{self.prefix}:escalations:news"

    @property
    def escalations(self) -> str:
        """Stream of the 督办 events sent (`Escalated`), for the supervisors' wallboard."""
        return f"{self.prefix}:escalations"

    @property
    def triage_news(self) -> str:
        """Pub/Sub: what triage decided about a ticket, or did with it (`TriageNews`), for the seat
        holding it."""
        return f"{self.prefix}:triage:news"

    @property
    def pending(self) -> str:
        """Recordings that live recognition missed, for `transcribe --pending`."""
        return f"{self.prefix}:asr:pending"

    @property
    def frames(self) -> str:
        return f"{self.prefix}:voice:frames"

    # --- the processes of `run` -----------------------------------------------------------------

    def run(self, host: str) -> str:
        """The id of the `run` now serving on `host` (its media workers beat with it)."""
        return f"{self.prefix}:run:{host}"

    @property
    def pool(self) -> str:
        """Worker id -> its pool slot's state, for `hotline-gateway status`."""
        return f"{self.prefix}:pool"
