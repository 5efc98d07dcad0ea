"""Rendering the front from the typed config (pure), and checking it with the real Kamailio binary."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.errors import ConfigError
from gateway.sipfront.commands import render
from gateway.sipfront.config import front_errors, password_errors
from gateway.sipfront.kamailio import (
    FrontPaths,
    SipFrontError,
    fill,
    render_cfg,
    render_dispatcher,
    syntax_check,
    write_front,
)
from gateway.sipfront.pool import Destination, boot_enabled, destinations, worker_specs
from gateway.sipfront.process import KamailioCommand, KamailioProcess
from gateway.sipfront.rpc import parse_contacts, parse_dispatcher_list
from gateway.sipfront.status import Report, WorkerRow, belongs, format_report
from peers.flows import DEFAULT_FLOW
from peers.gateway_config import make_raw_config
from tests.sipfront.front_stack import cover_flow_queues


def _config(tmp_path: Path, front: dict[str, Any] | None = None, **voice: Any) -> GatewayConfig:
    return parse_config(_raw(tmp_path, front, **voice), tmp_path)


def _raw(tmp_path: Path, front: dict[str, Any] | None = None, **voice: Any) -> dict[str, Any]:
    raw = make_raw_config("t", "redis://127.0.0.1:1/0")
    raw["agents"][0]["sip_uri"] = "sip:1001@10.1.0.5:5060"
    raw["voice"] = {
        "enabled": True,
        "flows": [str(DEFAULT_FLOW)],
        "listen": "10.1.0.5:5101",
        "embedded_workers": 3,
        "calls_per_worker": 4,
        **voice,
    }
    cover_flow_queues(raw, DEFAULT_FLOW)
    raw["sipfront"] = {
        "enabled": True,
        "listen": "10.1.0.5:5060",
        "trunks": ["203.0.113.7", "198.51.100.0/24"],
        "phones": {"1001": "HG_SIP_PASSWORD_1001"},
        "dir": str(tmp_path / "front"),
        **(front or {}),
    }
    return raw


def test_dispatcher_list_is_derived_from_the_pool_with_maxload_half_the_legs(tmp_path: Path) -> None:
    config = _config(tmp_path)
    text = render_dispatcher(destinations(config))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "1 sip:10.1.0.5:5101 0 0 duid=w1;maxload=2",
        "1 sip:10.1.0.5:5102 0 0 duid=w2;maxload=2",
        "1 sip:10.1.0.5:5103 0 0 duid=w3;maxload=2",
    ]


def test_a_scaling_pool_lists_every_slot_and_disables_those_not_started_at_boot(tmp_path: Path) -> None:
    config = _config(tmp_path, embedded_workers=2, worker_id_prefix="a-", pool={"max_workers": 4})
    assert [spec.worker_id for spec in worker_specs(config)] == ["a-w1", "a-w2", "a-w3", "a-w4"]
    text = render_dispatcher(destinations(config), boot_enabled(config))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "1 sip:10.1.0.5:5101 0 0 duid=a-w1;maxload=2",
        "1 sip:10.1.0.5:5102 0 0 duid=a-w2;maxload=2",
        "1 sip:10.1.0.5:5103 4 0 duid=a-w3;maxload=2",
        "1 sip:10.1.0.5:5104 4 0 duid=a-w4;maxload=2",
    ]


@pytest.mark.parametrize(
    ("voice", "front", "message"),
    [
        (
            {"embedded_workers": 3, "pool": {"max_workers": 2}},
            {},
            "min_workers (3) <= embedded_workers (3) <= max_workers (2)",
        ),
        ({"embedded_workers": 1, "pool": {"min_workers": 2, "max_workers": 4}}, {}, "min_workers (2)"),
        ({"pool": {"max_workers": 5}}, {"enabled": False}, "needs [sipfront] enabled with workers = []"),
        ({"pool": {"max_workers": 5}}, {"workers": ["10.1.0.6:5070"]}, "needs [sipfront] enabled with workers = []"),
        ({"worker_id_prefix": "host a"}, {}, "worker_id_prefix"),
        (
            {"rtp_port_base": 5090, "rtp_ports_per_worker": 10},
            {},
            "SIP ports 5101..5103 overlap their RTP ports 5090..5119",
        ),
        ({"rtp_port_base": 65000, "pool": {"max_workers": 100}}, {}, "pass 65535"),
    ],
)
def test_pool_settings_are_checked(tmp_path: Path, voice: dict[str, Any], front: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _config(tmp_path, front, **voice)
    assert message in str(raised.value), str(raised.value)


def test_each_worker_binds_rtp_on_its_own_port_block(tmp_path: Path) -> None:
    voice = _config(tmp_path, pool={"max_workers": 10}).voice  # listen 10.1.0.5:5101
    assert voice.rtp_ports(5101) == (10000, 16)
    assert voice.rtp_ports(5110) == (10144, 16)
    blocks = [range(*voice.rtp_ports(port)) for port in range(5101, 5111)]
    starts = [voice.rtp_ports(port)[0] for port in range(5101, 5111)]
    assert all(a + 16 == b for a, b in itertools.pairwise(starts)), blocks
    # A worker started by hand on another port scans every block instead.
    assert voice.rtp_ports(5000) == (10000, 256 * 16)


def test_explicit_workers_win_over_the_derived_pool(tmp_path: Path) -> None:
    config = _config(tmp_path, {"workers": ["10.1.0.6:5070", "10.1.0.7:5070"]}, calls_per_worker=6)
    assert destinations(config) == [
        Destination("d1", "10.1.0.6", 5070, 3),
        Destination("d2", "10.1.0.7", 5070, 3),
    ]


def test_cfg_carries_the_settings_and_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HG_SIP_PASSWORD_1001", "a-very-real-phone-pass")
    config = _config(tmp_path, {"max_message_bytes": 4000, "probe_interval": 3, "fr_timer": 1.5})
    cfg = render_cfg(config, FrontPaths(tmp_path / "front"))
    assert "listen=udp:10.1.0.5:5060\n" in cfg
    assert 'alias="10.1.0.5:5060"' in cfg
    assert 'is_in_subnet("$si", "203.0.113.7/32,198.51.100.0/24")' in cfg
    assert "if ($ml > 4000)" in cfg
    assert 'modparam("dispatcher", "ds_ping_interval", 3)' in cfg
    assert 'modparam("tm", "fr_timer", 1500)' in cfg
    assert 'modparam("usrloc", "db_mode", 0)' in cfg
    assert "$sht(agents=>1001) = $env(HG_SIP_PASSWORD_1001);" in cfg
    failover = cfg[cfg.index("failure_route[DS_FAIL]") :].split("\n}\n", 1)[0]
    # ds_next_dst() after alg 10 returns false (measured): a failover selects again.
    assert 'ds_select_dst("1", "10")' in failover
    assert "ds_next_dst()" not in failover.replace("ds_next_dst() returns", "")
    assert "a-very-real-phone-pass" not in cfg
    assert "{{" not in cfg


def test_advertised_address_and_aliases(tmp_path: Path) -> None:
    config = _config(tmp_path, {"advertise": "198.51.100.9:5060", "aliases": ["hotline.example.cn:5060"]})
    cfg = render_cfg(config, FrontPaths(tmp_path / "front"))
    assert "listen=udp:10.1.0.5:5060 advertise 198.51.100.9:5060\n" in cfg
    assert re.findall(r'^alias="([^"]+)"', cfg, re.M) == [
        "10.1.0.5:5060",
        "198.51.100.9:5060",
        "hotline.example.cn:5060",
    ]
    assert '"ds_ping_from", "sip:sipfront@198.51.100.9"' in cfg


def test_fill_refuses_a_missing_or_unused_value() -> None:
    assert fill("a {{x}} b", {"x": "1"}) == "a 1 b"
    with pytest.raises(KeyError, match="no value"):
        fill("{{x}} {{y}}", {"x": "1"})
    with pytest.raises(KeyError, match="no placeholder"):
        fill("{{x}}", {"x": "1", "z": "2"})


@pytest.mark.parametrize(
    ("front", "message"),
    [
        ({"trunks": ["not-an-ip"]}, "must be an IP address or network"),
        ({"trunks": []}, "at least 1 item"),
        ({"listen": "10.1.0.5"}, "must be host:port"),
        ({"phones": {"1001": "lowercase_env"}}, "has the wrong form"),
        ({"phones": {"bad user": "HG_X"}}, "has the wrong form"),
        ({"workers": ["10.1.0.6:0"]}, "must be host:port"),
    ],
)
def test_bad_settings_are_refused_by_field(tmp_path: Path, front: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, front)
    assert any(field.path.startswith("sipfront.") and message in field.message for field in caught.value.fields), str(
        caught.value
    )


def test_front_errors_span_sections_and_are_the_configs_own(tmp_path: Path) -> None:
    raw = _raw(tmp_path, {"phones": {}}, enabled=False)
    config = GatewayConfig.model_validate({**raw, "base_dir": str(tmp_path)})
    expected = [
        "sipfront.enabled: the front needs [voice] enabled = true",
        "agents[0].sip_uri: rings '1001' at the front, but sipfront.phones has no '1001'",
    ]
    assert [str(e) for e in front_errors(config)] == expected
    # check-config and run refuse it with these problems too (one validation for both).
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path)
    assert [str(e) for e in caught.value.fields] == expected
    with pytest.raises(ConfigError) as pool_less:
        _config(tmp_path, embedded_workers=0)
    assert any(e.path == "sipfront.workers" for e in pool_less.value.fields)


def test_phone_passwords_come_from_the_environment_and_placeholders_are_refused(tmp_path: Path) -> None:
    front = _config(tmp_path).sipfront
    assert [e.message for e in password_errors(front, {})] == ["environment variable HG_SIP_PASSWORD_1001 is not set"]
    assert "shorter" in password_errors(front, {"HG_SIP_PASSWORD_1001": "short"})[0].message
    assert "placeholder" in password_errors(front, {"HG_SIP_PASSWORD_1001": "changeme-changeme"})[0].message
    assert password_errors(front, {"HG_SIP_PASSWORD_1001": "x7-Gq2-vT9-pL4-z"}) == []


DISPATCHER_LIST = """\
{
\tNRSETS: 1
\tRECORDS: {
\t\tSET: {
\t\t\tID: 1
\t\t\tTARGETS: {
\t\t\t\tDEST: {
\t\t\t\t\tURI: sip:127.0.0.1:5101
\t\t\t\t\tFLAGS: AP
\t\t\t\t\tPRIORITY: 0
\t\t\t\t\tATTRS: {
\t\t\t\t\t\tBODY: duid=w1;maxload=2
\t\t\t\t\t\tDUID: w1
\t\t\t\t\t\tMAXLOAD: 2
\t\t\t\t\t}
\t\t\t\t\tRUNTIME: {
\t\t\t\t\t\tDLGLOAD: 1
\t\t\t\t\t}
\t\t\t\t}
\t\t\t\tDEST: {
\t\t\t\t\tURI: sip:127.0.0.1:5102
\t\t\t\t\tFLAGS: IP
\t\t\t\t\tATTRS: {
\t\t\t\t\t\tDUID: w2
\t\t\t\t\t\tMAXLOAD: 2
\t\t\t\t\t}
\t\t\t\t\tRUNTIME: {
\t\t\t\t\t\tDLGLOAD: 0
\t\t\t\t\t}
\t\t\t\t}
\t\t\t}
\t\t}
\t}
}
"""


def test_dispatcher_list_answer_is_parsed() -> None:
    first, second = parse_dispatcher_list(DISPATCHER_LIST)
    assert (first.address, first.flags, first.duid, first.load, first.maxload, first.active) == (
        "127.0.0.1:5101", "AP", "w1", 1, 2, True,
    )  # fmt: skip
    assert (second.address, second.active, second.load) == ("127.0.0.1:5102", False, 0)
    assert parse_contacts("\t\t\tAddress: sip:1001-0x1@127.0.0.1:5301\n\t\t\tExpires: 58\n") == [
        "sip:1001-0x1@127.0.0.1:5301"
    ]


def test_status_report_joins_heartbeats_and_kamailio() -> None:
    report = Report(
        workers=[
            WorkerRow(
                "w1",
                {"sip": "127.0.0.1:5101", "pid": "41", "callers": "1", "legs": "2", "capacity": "2", "audio": "c"},
                3.2,
            ),
            WorkerRow("w2", {"sip": "127.0.0.1:5102", "pid": "42", "callers": "0", "legs": "0", "capacity": "2"}, -4.0),
        ],
        targets=parse_dispatcher_list(DISPATCHER_LIST),
        pool={"w1": "serving", "w2": "draining"},
    )
    text = format_report(report)
    row = r"w1\s+127\.0\.0\.1:5101\s+41\s+1\s+2\s+2\s+c\s+serving\s+by hand\s+alive; kamailio AP load 1/2"
    assert re.search(row, text), text
    assert re.search(r"w2\s.*\sdraining\s+by hand\s+lapsed", text), text
    assert "lapsed 4.0 s ago; kamailio IP load 0/2" in text
    assert "sip:127.0.0.1:5102" in text and "DOWN" in text
    off = format_report(Report(front_problem="the SIP front is not running: nothing answers on /x"))
    assert "(none has a heartbeat)" in off
    assert off.splitlines()[-2:] == [
        "kamailio dispatcher (kamcmd dispatcher.list):",
        "  the SIP front is not running: nothing answers on /x",
    ]


def test_status_tells_this_runs_workers_from_strangers_under_the_same_id() -> None:
    ours = WorkerRow("w1", {"sip": "127.0.0.1:5101", "host": "a", "run": "01RUNNOWAAAAAA"}, 3.0)
    orphan = WorkerRow("w2", {"sip": "127.0.0.1:5102", "host": "a", "run": "01RUNBEFOREBBB"}, 3.0)
    other_host = WorkerRow("w3", {"sip": "127.0.0.2:5101", "host": "b", "run": "01RUNONHOSTBCC"}, 3.0)
    runs = {"a": "01RUNNOWAAAAAA", "b": "01RUNONHOSTBCC"}
    assert belongs(ours, runs) == "this run"
    assert belongs(orphan, runs) == "STRANGER (run OREBBB, not AAAAAA)"
    assert belongs(other_host, runs) == "this run"
    assert belongs(WorkerRow("w4", {"host": "a"}, 3.0), runs) == "by hand"
    text = format_report(Report(workers=[ours, orphan], runs=runs))
    assert re.search(r"w2\s.*STRANGER", text), text


# --- with the real binary ----------------------------------------------------------------------


@pytest.mark.slow
async def test_render_command_writes_files_and_passes_both_checks(
    tmp_path: Path, run_dir: Path, kamailio_available: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, {"listen": "127.0.0.1:5999", "dir": str(run_dir)}, listen="127.0.0.1:5101")
    # Rendering needs no IVR flow: enable voice without loading one.
    config = config.model_copy(update={"voice": config.voice.model_copy(update={"enabled": True})})
    assert await render(config, "test.toml") == 0
    out = capsys.readouterr().out
    assert "kamailio -c: OK" in out and "start check: OK" in out
    assert (run_dir / "kamailio.cfg").is_file() and (run_dir / "dispatcher.list").is_file()
    assert not (run_dir / "kamailio.pid").exists(), "the start check ran elsewhere, and stopped"


@pytest.mark.slow
async def test_start_check_catches_what_kamailio_c_misses(
    tmp_path: Path, run_dir: Path, kamailio_available: None
) -> None:
    """A pseudo-variable of a module not loaded ($T_reply_code needs tmx): `-c` passes, start fails."""
    config = _config(tmp_path, {"listen": "127.0.0.1:5998", "dir": str(run_dir)}, listen="127.0.0.1:5101")
    rendered = write_front(config)
    cfg = rendered.paths.cfg
    cfg.write_text(
        cfg.read_text().replace(
            '    ds_mark_dst("ip");', '    xlog("L_INFO", "$T_reply_code\\n");\n    ds_mark_dst("ip");'
        )
    )
    await syntax_check("kamailio", cfg)  # passes
    process = KamailioProcess(KamailioCommand.for_paths(config.sipfront, rendered.paths), log_path=run_dir / "k.log")
    with pytest.raises(SipFrontError, match="T_reply_code"):
        await process.start()
    assert process.pid is None


def test_the_commented_example_in_gateway_toml_is_a_valid_section() -> None:
    """config/gateway.toml's `# [sipfront]` block, uncommented, is a valid [sipfront]."""
    import tomllib

    from gateway.sipfront.config import KamailioConfig

    text = (Path(__file__).resolve().parents[2] / "config" / "gateway.toml").read_text(encoding="utf-8")
    lines = text[text.index("# [sipfront]") :].splitlines()
    # The commented block only: up to the first line that is not a comment (other sections follow).
    block = list(itertools.takewhile(lambda line: line.startswith("# "), lines))
    uncommented = "\n".join(line.removeprefix("# ") for line in block)
    section = tomllib.loads(uncommented)["sipfront"]
    front = KamailioConfig.model_validate(section)
    assert front.enabled and front.phones["1001"] == "HG_SIP_PASSWORD_1001"


def test_the_commented_pool_example_in_gateway_toml_is_a_valid_section() -> None:
    """config/gateway.toml's `# [voice.pool]` block, uncommented, is a valid pool that scales."""
    import tomllib

    from gateway.config import VoiceConfig

    text = (Path(__file__).resolve().parents[2] / "config" / "gateway.toml").read_text(encoding="utf-8")
    lines = text[text.index("# [voice.pool]") :].splitlines()
    block: list[str] = []
    for line in lines:
        if not line.startswith("# ") or (block and line.startswith("# [") and "voice.pool" not in line):
            break
        block.append(line.removeprefix("# "))
    pool = tomllib.loads("\n".join(block))["voice"]["pool"]
    voice = VoiceConfig.model_validate({"pool": pool})
    assert voice.autoscaled and voice.pool_bounds() == (1, 20)
