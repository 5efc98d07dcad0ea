from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.config import format_path, hash_secret, load_config, verify_secret
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "gateway.cli"]

BAD = """
[http]
listen = "nowhere"
max_body_bytes = -1

[seats]
offer_timeout = 0
colour = "blue"

[[queues]]
name = "general"
skills = ["general"]

[[queues]]
name = "general"
skills = ["general"]

[[queues]]
name = "tax"
skills = ["tax"]
max_wait = -5

[[agents]]
id = "1001"
skills = ["plumbing"]
token_hash = "sha256:00"
"""


GENERAL = '[[queues]]\nname = "general"\nskills = ["general"]\n'  # the one queue most configs here need
ZERO_HASH = 'token_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    """What `load_config` refuses this config for, one line a field, in its order."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    return [str(field) for field in caught.value.fields]


def test_example_config_is_valid_with_credentials(tmp_path: Path) -> None:
    text = (ROOT / "config" / "gateway.toml").read_text()
    creds = tmp_path / "creds.toml"
    a, b = (hash_secret(letter * 20) for letter in "ab")
    raw = tomllib.loads(text)
    clients = "".join(f'{client["id"]} = "{hash_secret(client["id"] * 4)}"\n' for client in raw["api_clients"])
    supervisors = "".join(f'{sup["id"]} = "{hash_secret(sup["id"] * 8)}"\n' for sup in raw["supervisors"])
    creds.write_text(f'[agents]\n"1001" = "{a}"\n"1002" = "{b}"\n[api_clients]\n{clients}[supervisors]\n{supervisors}')
    text = text.replace('credentials_file = "../var/credentials.toml"', f'credentials_file = "{creds}"')
    text = text.replace('flows = ["flows/12345.toml"]', f'flows = ["{ROOT / "config" / "flows" / "12345.toml"}"]')
    config = load_config(write(tmp_path, text), environ={})
    assert config.ivr["12345-default"].flow.human_key == "0"
    assert [q.name for q in config.queues] == ["general", "enterprise", "housing", "tax"]
    assert config.queue("enterprise").priority == 7
    assert verify_secret("a" * 20, config.agents[0].token_hash)
    assert not verify_secret("a" * 19, config.agents[0].token_hash)
    reader = next(client for client in config.api_clients if client.id == "reader")
    assert reader.read_only and set(reader.channels) == {"voice", "sms", "wechat", "telegram", "web"}
    assert [s.id for s in config.supervisors] == ["s1"] and verify_secret("s1" * 8, config.supervisors[0].token_hash)


def test_every_error_is_listed_by_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, BAD), environ={})
    paths = {field.path for field in caught.value.fields}
    assert {
        "http.listen",
        "http.max_body_bytes",
        "seats.offer_timeout",
        "seats.colour",
        "queues[2].max_wait",
        "agents[0].token_hash",
    } <= paths


def test_semantic_errors_after_structure_is_valid(tmp_path: Path) -> None:
    text = GENERAL + GENERAL + '[[agents]]\nid = "1001"\nskills = ["plumbing"]\n[routing]\ndefault_queue = "nope"\n'
    messages = problems(tmp_path, text)
    assert "queues[0]: duplicate 'general'" in messages
    assert "routing.default_queue: no queue named 'nope'" in messages
    assert any(m.startswith("agents[0].skills: match no queue") for m in messages)
    assert any(m.startswith("agents[0].token_hash: missing") for m in messages)


def test_enabled_channel_needs_its_secret_in_the_environment(tmp_path: Path) -> None:
    sms = '[channels.sms]\nenabled = true\nsystem_id = "hotline"\nsource_addr = "12345"\n'
    text = GENERAL + sms
    assert problems(tmp_path, text) == ["channels.sms.password_env: environment variable HG_SMPP_PASSWORD is not set"]
    assert load_config(write(tmp_path, text), environ={"HG_SMPP_PASSWORD": "s3cr-env"})  # SMPP: 8 at most


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[[queues]\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_voice_flow_errors_name_the_file_and_field(tmp_path: Path) -> None:
    flow = (ROOT / "config" / "flows" / "12345.toml").read_text()
    (tmp_path / "bad.toml").write_text(
        flow.replace('queue = "enterprise"', 'queue = "nowhere"').replace("max_retries = 1", "max_retries = 99")
    )
    text = GENERAL + '[voice]\nenabled = true\nflows = ["bad.toml", "absent.toml"]\nnumbers = { "12345" = "other" }\n'
    messages = problems(tmp_path, text)
    assert any(m.startswith("voice.flows[0] (bad.toml): flow.nodes.main_menu.menu.max_retries") for m in messages), (
        messages
    )
    assert any(m.startswith("voice.flows[1]:") and "no such file" in m for m in messages)
    assert "voice.numbers.12345: no flow 'other' in voice.flows" in messages


def test_format_path() -> None:
    assert format_path(("queues", 2, "max_wait")) == "queues[2].max_wait"
    assert format_path(()) == ""


def test_check_config_and_run_refuse_with_the_same_message(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    check = subprocess.run([*CLI, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    run = subprocess.run([*CLI, "run", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 2 and run.returncode == 2
    assert "queues[2].max_wait: Input should be greater than 0" in check.stderr
    assert check.stderr == run.stderr


def test_problems_across_fields_are_listed_beside_problems_of_form(tmp_path: Path) -> None:
    """One run of check-config lists both kinds (a user fixing one kind should not meet the other after)."""
    messages = problems(tmp_path, BAD)
    assert "queues[2].max_wait: Input should be greater than 0" in messages
    assert any(m.startswith("seats.colour: Extra inputs are not permitted (unknown key") for m in messages)
    assert "queues[0]: duplicate 'general'" in messages
    assert any(m.startswith("agents[0].skills: match no queue") for m in messages)
    # the malformed hash is reported once, as malformed, not again as missing
    assert [m for m in messages if m.startswith("agents[0].token_hash")] == [
        "agents[0].token_hash: String should match pattern '^sha256:[0-9a-f]{64}$' (has the wrong form): "
        "^sha256:[0-9a-f]{64}$"
    ]


def test_an_entry_missing_a_required_field_is_set_aside_and_the_rest_checked(tmp_path: Path) -> None:
    text = (
        GENERAL
        + '[[queues]]\nlabel = "no name"\nskills = ["tax"]\n'
        + '[[agents]]\nid = "1001"\nskills = ["general"]\n'
        + ZERO_HASH
        + '[routing]\ndefault_queue = "nope"\nby_channel = { fax = "general" }\n'
    )
    messages = problems(tmp_path, text)
    assert any(m.startswith("queues[1].name: Field required") for m in messages)
    assert any(m.startswith("routing.by_channel.fax") for m in messages)
    assert "routing.default_queue: no queue named 'nope'" in messages


def test_when_nothing_is_left_to_check_against_the_later_checks_say_they_were_skipped(tmp_path: Path) -> None:
    messages = problems(tmp_path, '[routing]\ndefault_queue = "nope"\n')
    assert messages[0].startswith("queues: Field required")
    assert messages[-1] == "(checks across fields skipped: fix the problems above first)"


def test_every_skill_of_an_agent_must_be_a_queues_skill(tmp_path: Path) -> None:
    text = GENERAL + '[[queues]]\nname = "housing"\nskills = ["housing"]\n[[agents]]\nid = "1001"\n'
    text += 'skills = ["general", "housng"]\n' + ZERO_HASH
    assert problems(tmp_path, text) == ["agents[0].skills[1]: no queue has the skill 'housng' (a typo?)"]


def test_check_config_refuses_what_run_refuses_for_the_sip_front(tmp_path: Path) -> None:
    """The front's checks and its phones' passwords are the config's own: check-config lists them."""
    text = GENERAL + '[sipfront]\nenabled = true\nphones = { "1001" = "HG_TEST_NO_SUCH_PASSWORD" }\n'
    path = write(tmp_path, text)
    check = subprocess.run([*CLI, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 2
    assert "sipfront.enabled: the front needs [voice] enabled = true" in check.stderr
    assert "sipfront.phones.1001: environment variable HG_TEST_NO_SUCH_PASSWORD" in check.stderr


def test_the_citizen_history_keeps_no_more_than_the_tickets_and_what_the_merge_step_reads(tmp_path: Path) -> None:
    text = GENERAL + "[redis]\nticket_ttl = 864000\n[history]\nwindow = 950400\nrepeat_window = 1000000\n"
    assert problems(tmp_path, text) == [
        "history.window: must be <= redis.ticket_ttl (864000 s)",
        "history.repeat_window: must be <= history.window (the index keeps no more)",
    ]
    merging = '[triage]\nenabled = true\ncatalogue = "catalogue.toml"\n'
    merging += "[triage.merge]\nwindow = 172800\nmax_citizen = 30\n"
    text = GENERAL + "[history]\nwindow = 86400\nrepeat_window = 3600\nmax_tickets = 20\n" + merging
    assert problems(tmp_path, text) == [
        "history.window: must be >= triage.merge.window (172800 s)",
        "history.max_tickets: must be >= triage.merge.max_citizen (30)",
    ]
    alone = GENERAL + "[history]\nwindow = 86400\nrepeat_window = 3600\nmax_tickets = 20\n"
    history = load_config(write(tmp_path, alone), environ={}).history  # no merge step: nothing else to hold
    assert (history.window, history.max_tickets, history.repeat_window) == (86400, 20, 3600)
