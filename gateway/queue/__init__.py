"""The queue store: tickets, queues, offers and claims in Redis, every transition one Lua script.

`store.py` is the `TicketQueue` the rest of the gateway uses; `scripts.py` the Lua; `batching.py`
sends the scripts of one loop turn in one round trip.
"""

from gateway.queue.store import GROUP, IntakeResult, Keys, RawTicket, TicketQueue

__all__ = ["GROUP", "IntakeResult", "Keys", "RawTicket", "TicketQueue"]
