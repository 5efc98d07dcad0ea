"""SMS: the shared text core (text.py), the session interface (link.py), and one sans-I/O codec
with a thin asyncio session per protocol (SMPP 3.4: smpp.py, smpp_session.py)."""
