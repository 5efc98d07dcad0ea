"""Triage (issue #15): what the gateway works out about each ticket before an agent opens it.

Pure modules (`catalogue`, `dispatch`) and one service (`consumer`) that reads the ticket-created
stream beside intake, never in its path.
"""
