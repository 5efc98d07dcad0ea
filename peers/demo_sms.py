"""`make run SMS=smpp` (or `SMS=cmpp`): the gateway with a faithful carrier beside it, to try SMS by hand.

A newcomer has no SMSC; this starts the test SMSC (`peers.smsc`) or ISMG (`peers.ismg`) as a child,
writes the example config with `[channels.sms]` enabled and pointing at it (beside the original, as
`<name>.sms-demo.toml`, so its relative paths still hold; git ignores it), and runs
`hotline-gateway run` on it with the secret in the environment. Both stop with Ctrl-C. Then, in
another terminal, a citizen writes:

    .venv/bin/python -m peers.smsc send --from 13800138000 --to 12345 --text 路灯坏了

and the message is a ticket offered to a seat; a seat's reply is printed by the carrier.

A test fixture's program, not a product part: a real deployment points `[channels.sms]` at its
carrier's SMSC or ISMG.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from gateway.shell.embedded_redis import die_with_parent


@dataclass(frozen=True)
class Carrier:
    module: str
    listen: str
    control: str
    account: str
    number: str

    def section(self, password_env: str) -> dict[str, Any]:
        common = {"enabled": True, "smsc": self.listen, "password_env": password_env}
        if self.module == "peers.smsc":
            return {**common, "protocol": "smpp", "system_id": self.account, "source_addr": self.number}
        return {**common, "protocol": "cmpp", "sp_id": self.account, "service_id": "HOTLINE", "src_id": self.number}


CARRIERS = {
    "smpp": Carrier("peers.smsc", "127.0.0.1:2775", "127.0.0.1:2776", "hotline", "12345"),
    "cmpp": Carrier("peers.ismg", "127.0.0.1:7890", "127.0.0.1:7891", "901234", "106353112345"),
}


def demo_config(config: Path, carrier: Carrier, password_env: str) -> Path:
    """The config with `[channels.sms]` pointing at the carrier, written beside the original."""
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    raw.setdefault("channels", {})["sms"] = carrier.section(password_env)
    path = config.with_name(f"{config.stem}.sms-demo.toml")
    path.write_text(
        "# Written by `make run SMS=...` (peers/demo_sms.py) from "
        + config.name
        + "; overwritten each time.\n"
        + tomli_w.dumps(raw),
        encoding="utf-8",
    )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peers.demo_sms", description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(CARRIERS), required=True)
    parser.add_argument("--config", type=Path, default=Path("config/gateway.toml"))
    args = parser.parse_args(argv)
    carrier = CARRIERS[args.protocol]
    password_env = "HG_SMS_DEMO_SECRET"
    secret = secrets.token_hex(4)  # SMPP 3.4 allows 8 characters; a fresh one each run
    config = demo_config(args.config, carrier, password_env)
    peer = subprocess.Popen(
        [sys.executable, "-m", carrier.module, "serve", "--listen", carrier.listen,
         "--account", f"{carrier.account}:{secret}", "--control", carrier.control],
        preexec_fn=die_with_parent,
    )  # fmt: skip
    print(
        f"SMS demo: {carrier.module} on {carrier.listen}; a citizen writes to {carrier.number} with\n"
        f"  .venv/bin/python -m {carrier.module} send --control {carrier.control} "
        f"--from 13800138000 --to {carrier.number} --text 路灯坏了\n",
        flush=True,
    )
    gateway = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)]
    try:
        return subprocess.call(gateway, env={**os.environ, password_env: secret})
    except KeyboardInterrupt:
        return 130
    finally:
        peer.terminate()
        peer.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
