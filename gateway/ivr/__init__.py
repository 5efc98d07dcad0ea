"""The IVR core: a pure call state machine (events in, actions out) driven by a validated flow.

The pure core is ``events``, ``actions``, ``flow``, ``calendar`` and ``machine`` (no I/O; checked by
``tests/ivr/test_purity.py``). See ``docs/ivr.md``.
"""

from gateway.ivr.calendar import ALWAYS_OPEN, Calendar, is_open
from gateway.ivr.flow import Flow, IvrConfig, PromptSpec, parse_ivr_toml
from gateway.ivr.machine import CallMachine, Phase

__all__ = [
    "ALWAYS_OPEN",
    "Calendar",
    "CallMachine",
    "Flow",
    "IvrConfig",
    "Phase",
    "PromptSpec",
    "is_open",
    "parse_ivr_toml",
]
