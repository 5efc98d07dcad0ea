"""`hotline-gateway` command line: run, check-config, seat, init-credentials, hash-secret."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import secrets
import signal
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path

from gateway.config import CREDENTIAL_FIELDS, GatewayConfig, hash_secret, load_config, parse_config, read_toml
from gateway.errors import ConfigError, GatewayError
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.shell.preflight import Address, RunLock, check_addresses, in_use
from gateway.shell.supervisor import RUN_ID_ENV
from gateway.ticket import new_ticket_id, utcnow

DEFAULT_CONFIG = "config/gateway.toml"
CONFIG_ENV = "HG_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout, with an editable install


def _load_or_exit(path: str, environment: bool = True) -> GatewayConfig:
    """The config, checked as `run` checks it; `environment=False` for commands that need none of
    the secrets the environment holds (they would only refuse for want of them)."""
    try:
        return load_config(path, check_environment=environment)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print("hint: `hotline-gateway check-config PATH` lists every problem; see README.md", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_exit(args.config)
    print(
        f"{args.config}: OK ({len(config.queues)} queues, {len(config.agents)} agents, "
        f"{len(config.api_clients)} API clients)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_or_exit(args.config)
    redis_url = args.redis_url or os.environ.get("REDIS_URL") or config.redis.url
    log = logging.getLogger("gateway")
    # Every child (media workers, Kamailio) inherits it: `status` tells this run's workers from
    # strangers answering under the same ids (an orphan of a killed run, another host's).
    os.environ[RUN_ID_ENV] = run_id = new_ticket_id(utcnow())
    lock = RunLock(config.resolve(config.redis.embedded.dir)) if not redis_url else None
    embedded = None
    try:
        if lock is not None:
            lock.acquire()
            _let_a_previous_redis_finish(config)
        check_addresses(config, embedded_redis=not redis_url)
        if not redis_url:
            settings = config.redis.embedded
            embedded = EmbeddedRedis(
                port=settings.port,
                data_dir=config.resolve(settings.dir),
                appendfsync=settings.appendfsync,
                binary=settings.binary,
            )
            embedded.start()
            redis_url = embedded.url
            log.info("embedded %s on %s (data in %s)", embedded.server, redis_url, embedded.data_dir)
        log.info("run %s: config %s", run_id, Path(args.config).resolve())
        asyncio.run(_serve(config, redis_url, args.config))
    except ConfigError as exc:
        print(f"hotline-gateway run: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"hotline-gateway run: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
        if lock is not None:
            lock.release()
    return 0


def _let_a_previous_redis_finish(config: GatewayConfig, timeout: float = 10.0) -> None:
    """The run lock was free, so any run before this one is dead; its embedded Redis got SIGTERM
    with it (PR_SET_PDEATHSIG) and may still be writing its append-only file: wait for it."""
    address = Address("tcp", "127.0.0.1", config.redis.embedded.port, "embedded Redis", "redis.embedded.port")
    deadline = time.monotonic() + timeout
    while in_use(address) and time.monotonic() < deadline:
        time.sleep(0.05)  # before any event loop runs: a short poll is the simplest correct wait


async def _serve(config: GatewayConfig, redis_url: str, config_path: str) -> None:
    from gateway.shell.app import run_gateway
    from gateway.sipfront.autoscale import WorkerPool

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    front = None
    if config.sipfront.enabled:
        # Before the workers: if Kamailio cannot start, nothing is left running. After them at
        # shutdown: the workers' BYEs to callers go through it (Record-Route).
        from gateway.sipfront.commands import start_front

        front = await start_front(config, config_path, redis_url)
    pool = None
    if config.voice.enabled and config.voice.pool_bounds()[1]:
        pool = WorkerPool(config, str(Path(config_path).resolve()), redis_url)
        await pool.start()
    try:
        await run_gateway(config, redis_url, stop)
    finally:
        if pool is not None:
            await pool.stop()
        if front is not None:
            await front.stop()


def _redis_url_for(config: GatewayConfig, given: str | None) -> str:
    """An explicit URL, REDIS_URL, the config's, or the embedded Redis that `run` starts."""
    return (
        given or os.environ.get("REDIS_URL") or config.redis.url or f"redis://127.0.0.1:{config.redis.embedded.port}/0"
    )


def cmd_media_worker(args: argparse.Namespace) -> int:
    from gateway.voice.run import run_media_worker

    # PJSIP is C: a crash in it (or in the live-audio module) would otherwise leave no trace in the
    # worker's log. This prints every thread's Python stack on SIGSEGV/SIGABRT/SIGBUS.
    faulthandler.enable()

    # A worker holds none of the front's or the channels' secrets: it must not refuse for want of them.
    config = _load_or_exit(args.config, environment=False)
    if not config.voice.enabled:
        print("voice is disabled in the config ([voice] enabled = false)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_media_worker(config, _redis_url_for(config, args.redis_url), args.id, args.listen))
    except GatewayError as exc:
        # ConfigError: refused to start (its id is another worker's, for one); exit 2 like a bad config.
        print(f"hotline-gateway media-worker: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


def cmd_triage(args: argparse.Namespace) -> int:
    from gateway.triage.run import run_triage

    # A triage process holds none of the front's or the channels' secrets, as a media worker.
    config = _load_or_exit(args.config, environment=False)
    if not config.triage.enabled:
        print("triage is disabled in the config ([triage] enabled = false)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_triage(config, _redis_url_for(config, args.redis_url)))
    except GatewayError as exc:
        print(f"hotline-gateway triage: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


def cmd_render_prompts(args: argparse.Namespace) -> int:
    from gateway.voice.prompts import prompt_files, render_missing

    config = _load_or_exit(args.config, environment=False)
    voice = config.voice
    total = 0
    for ivr in config.ivr.values():
        prompts = {pid: (spec.text, spec.file) for pid, spec in ivr.flow.prompts.items()}
        files = list(
            prompt_files(
                prompts,
                config.resolve(voice.prompts_dir),
                ivr.flow.id,
                Path(config.base_dir),
                voice.max_position_announced,
            )
        )
        rendered = render_missing(files, force=args.force)
        total += len(rendered)
        print(f"flow {ivr.flow.id}: {len(files)} prompt files, {len(rendered)} rendered")
    return 0


def cmd_recordings_cleanup(args: argparse.Namespace) -> int:
    from datetime import date

    from gateway.voice.recordings import cleanup

    config = _load_or_exit(args.config, environment=False)
    days = args.days or config.voice.recording_retention_days
    deleted = cleanup(config.resolve(config.voice.recordings_dir), days, date.today())
    print(f"deleted {len(deleted)} recording(s) older than {days} days")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    """Files: print their transcripts. --pending: transcribe the recordings live recognition missed
    and put the text into their tickets (run it once a dictation model is installed)."""
    from gateway.asr.transcribe import main_transcribe

    if not args.pending:
        if not args.files:
            print("hotline-gateway transcribe: give WAV files, or --pending", file=sys.stderr)
            return 2
        extra = ["--json"] if args.json else []
        extra += ["--engine", args.engine] if args.engine else []
        return main_transcribe([*args.files, *extra])
    from gateway.asr.pending import transcribe_pending

    config = _load_or_exit(args.config, environment=False)
    return asyncio.run(transcribe_pending(config, _redis_url_for(config, args.redis_url), args.engine))


def cmd_sipfront(args: argparse.Namespace) -> int:
    from gateway.sipfront.commands import render

    config = _load_or_exit(args.config, environment=False)
    try:
        return asyncio.run(render(config, args.config, start=not args.no_start_check))
    except GatewayError as exc:
        print(f"hotline-gateway sipfront: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.sipfront.commands import show_status

    config = _load_or_exit(args.config, environment=False)
    return asyncio.run(show_status(config, _redis_url_for(config, args.redis_url)))


def cmd_seat(args: argparse.Namespace) -> int:
    from gateway.clients.seat import run_seat

    token = args.token or os.environ.get("HG_SEAT_TOKEN")
    if not token:
        print("hotline-gateway seat: give --token or set HG_SEAT_TOKEN", file=sys.stderr)
        return 2
    return asyncio.run(run_seat(args.url, args.agent, token, auto=args.auto, limit=args.count))


def cmd_init_credentials(args: argparse.Namespace) -> int:
    """Give every agent, supervisor and API client without a hash a fresh random secret.

    Hashes go to the config's credentials file; the secrets themselves are written once, readable
    by the owner only, to a tokens file beside it, for the admin to hand out.
    """
    path = Path(args.config)
    raw = read_toml(path)
    cred_name = raw.get("credentials_file")
    if not isinstance(cred_name, str):
        print(f"{path}: set credentials_file first", file=sys.stderr)
        return 2
    cred_path = (path.resolve().parent / cred_name).resolve()
    existing = read_toml(cred_path) if cred_path.exists() else {}
    sections = [section for section, _ in CREDENTIAL_FIELDS]
    hashes: dict[str, dict[str, str]] = {s: dict(existing.get(s, {})) for s in sections}
    issued: list[str] = []
    for section, field in CREDENTIAL_FIELDS:
        for item in raw.get(section, []):
            item_id = str(item.get("id"))
            if item.get(field) or item_id in hashes[section]:
                continue
            secret = secrets.token_urlsafe(24)
            hashes[section][item_id] = hash_secret(secret)
            issued.append(f"{section[:-1]} {item_id} {secret}")
    cred_path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `hotline-gateway init-credentials`: hashes only. Keep out of git."]
    for section in sections:
        lines.append(f"[{section}]")
        lines += [f'"{key}" = "{value}"' for key, value in sorted(hashes[section].items())]
    cred_path.write_text("\n".join(lines) + "\n")
    if issued:
        tokens = cred_path.with_name("dev-tokens.txt")
        fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write("\n".join(issued) + "\n")
        print(f"issued {len(issued)} new secret(s); they are in {tokens} (mode 600)")
    else:
        print("every agent, supervisor and API client already has credentials")
    parse_config(tomllib.loads(path.read_text()), path.resolve().parent, str(path))
    return 0


def cmd_hash_secret(args: argparse.Namespace) -> int:
    secret = sys.stdin.readline().rstrip("\n")
    if len(secret) < 16:
        print("refusing: a secret must be at least 16 characters (use `secrets.token_urlsafe`)", file=sys.stderr)
        return 2
    print(hash_secret(secret))
    return 0


CONFIG_HELP = (
    "the gateway's TOML config (default: $HG_CONFIG, else config/gateway.toml in this directory, "
    "else the project's own config/gateway.toml)"
)
REDIS_HELP = "Redis to use (default: $REDIS_URL, else [redis] url, else the embedded Redis `run` starts)"


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help=CONFIG_HELP)


def _redis_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help=REDIS_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline-gateway", description="12345 hotline intake gateway")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("HG_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO (default, or $HG_LOG_LEVEL), WARNING or ERROR",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway (embedded Redis unless --redis-url/REDIS_URL); Ctrl-C stops it")
    _config_option(run)
    _redis_option(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and list every problem")
    check.add_argument("config", nargs="?", default=None, help=CONFIG_HELP)
    check.set_defaults(func=cmd_check_config)

    seat = sub.add_parser("seat", help="a terminal agent seat: prints offers, accepts and submits")
    seat.add_argument("--url", default="ws://127.0.0.1:8765", help="the seats' websocket (default: %(default)s)")
    seat.add_argument("--agent", required=True, help="the agent's id, as in [[agents]] id")
    seat.add_argument("--token", default=None, help="the agent's seat token (or $HG_SEAT_TOKEN)")
    seat.add_argument("--auto", action="store_true", help="accept and submit every offer without asking")
    seat.add_argument("--count", type=int, default=0, help="exit after this many submitted tickets (0: never)")
    seat.set_defaults(func=cmd_seat)

    creds = sub.add_parser("init-credentials", help="issue secrets for agents, supervisors and API clients lacking one")
    _config_option(creds)
    creds.set_defaults(func=cmd_init_credentials)

    worker = sub.add_parser("media-worker", help="run one pjsua2 media worker (voice)")
    _config_option(worker)
    _redis_option(worker)
    worker.add_argument("--id", default=f"w{os.getpid()}", help="worker id, unique across the hosts sharing Redis")
    worker.add_argument("--listen", default=None, help="SIP host:port (default [voice] listen)")
    worker.set_defaults(func=cmd_media_worker)

    triage = sub.add_parser("triage", help="a process that only triages new tickets (one more consumer)")
    _config_option(triage)
    _redis_option(triage)
    triage.set_defaults(func=cmd_triage)

    prompts = sub.add_parser("render-prompts", help="render every prompt without a recording (espeak-ng, sox)")
    _config_option(prompts)
    prompts.add_argument("--force", action="store_true", help="render again even if the file exists")
    prompts.set_defaults(func=cmd_render_prompts)

    cleanup = sub.add_parser("recordings-cleanup", help="delete recordings older than the retention")
    _config_option(cleanup)
    cleanup.add_argument("--days", type=int, default=0, help="override [voice] recording_retention_days")
    cleanup.set_defaults(func=cmd_recordings_cleanup)

    transcribe = sub.add_parser("transcribe", help="transcribe WAV files, or the recordings waiting (--pending)")
    transcribe.add_argument("files", nargs="*", help="WAV files (8 or 16 kHz mono) to transcribe")
    transcribe.add_argument("--json", action="store_true", help="one JSON object per file")
    transcribe.add_argument(
        "--engine", choices=["vosk", "pocketsphinx"], default=None, help="the recognizer (default: [asr] engine)"
    )
    transcribe.add_argument("--pending", action="store_true", help="the recordings live recognition missed")
    _config_option(transcribe)
    _redis_option(transcribe)
    transcribe.set_defaults(func=cmd_transcribe)

    sipfront = sub.add_parser("sipfront", help="Kamailio in front of the media workers")
    sipfront_sub = sipfront.add_subparsers(dest="sipfront_command", required=True)
    front_render = sipfront_sub.add_parser("render", help="write kamailio.cfg + dispatcher list, check them")
    _config_option(front_render)
    front_render.add_argument("--no-start-check", action="store_true", help="only `kamailio -c`, no test start")
    front_render.set_defaults(func=cmd_sipfront)

    status = sub.add_parser("status", help="media workers (Redis heartbeats) and Kamailio's dispatcher state")
    _config_option(status)
    _redis_option(status)
    status.set_defaults(func=cmd_status)

    hashing = sub.add_parser("hash-secret", help="read a secret on stdin, print its hash for the config")
    hashing.set_defaults(func=cmd_hash_secret)
    return parser


def find_config(given: str | None, environ: Mapping[str, str], cwd: Path) -> tuple[str, str]:
    """The config a command reads, and why that one: --config, $HG_CONFIG, config/gateway.toml here,
    or the project's own (commands run from anywhere in a checkout, or with its virtualenv)."""
    if given:
        return given, "--config"
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV], f"${CONFIG_ENV}"
    if (cwd / DEFAULT_CONFIG).exists():
        return DEFAULT_CONFIG, "the current directory"
    for directory in (*cwd.parents, PROJECT_ROOT):
        candidate = directory / DEFAULT_CONFIG
        if candidate.exists():
            return str(candidate), "the project's own"
    return DEFAULT_CONFIG, "the default"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if hasattr(args, "config"):
        args.config, why = find_config(args.config, os.environ, Path.cwd())
        if why not in ("--config", "the current directory"):
            logging.getLogger("gateway").info("config: %s (%s)", Path(args.config).resolve(), why)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
