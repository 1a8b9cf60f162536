"""Tests for genagent_thespian._os.security: the secret, the frame codec and hardened nodes.

Thespian systems run in subprocesses (``security_node.py``): installing the hardening is
process-wide and permanent, so the test process itself stays unpatched, and the stock system
used to show that the attack works must not inherit the patch either.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
import secrets
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from security_support import (
    MarkerPayload,
    Node,
    attack_all,
    free_port,
    run_client,
    subprocess_env,
    wait_until,
)

from genagent_thespian import GenAgentError
from genagent_thespian._os import security as sec
from genagent_thespian._os.frames import MAX_FRAME_BYTES_ENV, FrameCodec, TransportLimits
from genagent_thespian._os.security import (
    SecurityConfigError,
    TransportSecurity,
    check_capabilities,
    load_or_create_secret,
)


@pytest.fixture
def secret_hex() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sec.SECRET_ENV, raising=False)
    monkeypatch.delenv(sec.SECRET_FILE_ENV, raising=False)


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start nodes in subprocesses; stop them and assert none of their processes remains."""
    nodes: list[Node] = []

    def start(
        secret_hex: str | None, *, extra_env: dict[str, str] | None = None, **config: Any
    ) -> Node:
        config.setdefault("admin_port", free_port())
        log = tmp_path / f"thespian-{config['admin_port']}.log"
        node = Node(config, secret_hex=secret_hex, thesplog=log, extra_env=extra_env)
        node.log = log  # type: ignore[attr-defined]
        nodes.append(node)
        return node

    yield start
    for node in reversed(nodes):  # convention members before their leader
        node.stop()  # sweeps the node's process group and waits until it is empty
        assert node.leftovers == [], "the graceful shutdown left processes behind"
        assert node.pids() == []


def assert_no_secret(text: str | bytes, *secret_hexes: str) -> None:
    blob = text if isinstance(text, bytes) else text.encode()
    for secret_hex in secret_hexes:
        raw = bytes.fromhex(secret_hex)
        for form in (secret_hex.encode(), secret_hex.upper().encode(), raw, raw.hex(" ").encode()):
            assert form not in blob


def read_log(node: Node) -> str:
    log: Path = node.log  # type: ignore[attr-defined]
    return log.read_text() if log.exists() else ""


# -- the node secret ---------------------------------------------------------------------------


def test_secret_file_is_created_private_and_reused(tmp_path: Path, clean_env: None) -> None:
    path = tmp_path / "conf" / "node.secret"
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().strip() == first.hex()
    assert load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["node.secret"]  # no temporary left


def test_concurrent_creators_agree_on_one_secret(tmp_path: Path, clean_env: None) -> None:
    path = tmp_path / "node.secret"
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: load_or_create_secret(path), range(16)))
    assert len(set(results)) == 1
    script = (
        "from genagent_thespian._os.security import load_or_create_secret as l; print(l().hex())"
    )
    env = {**subprocess_env(None), sec.SECRET_FILE_ENV: str(path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    outputs = {proc.communicate(timeout=30)[0].strip() for proc in procs}
    assert outputs == {results[0].hex()}


def test_default_path_comes_from_env_then_the_node_home(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENAGENT_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    from_home = load_or_create_secret()
    secret_file = tmp_path / "state/genagent-thespian/default/node.secret"
    assert secret_file.read_text().strip() == from_home.hex()
    assert secret_file.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv(sec.SECRET_FILE_ENV, str(tmp_path / "other.secret"))
    from_env_file = load_or_create_secret()
    assert from_env_file != from_home
    assert (tmp_path / "other.secret").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o666])
def test_group_or_world_accessible_file_is_refused(
    tmp_path: Path, clean_env: None, mode: int
) -> None:
    path = tmp_path / "node.secret"
    secret = load_or_create_secret(path)
    path.chmod(mode)
    with pytest.raises(SecurityConfigError) as caught:
        load_or_create_secret(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert "chmod 600" in message
    assert_no_secret(message, secret.hex())
    assert isinstance(caught.value, GenAgentError)
    assert isinstance(caught.value, ValueError)


def test_symlink_and_non_hex_files_are_refused(tmp_path: Path, clean_env: None) -> None:
    real = tmp_path / "real.secret"
    secret = load_or_create_secret(real)
    link = tmp_path / "link.secret"
    link.symlink_to(real)
    with pytest.raises(SecurityConfigError, match="symlinks are refused"):
        load_or_create_secret(link)
    garbage = tmp_path / "garbage.secret"
    garbage.write_text("not hex at all " + secret.hex())
    garbage.chmod(0o600)
    with pytest.raises(SecurityConfigError, match="not valid hex") as caught:
        load_or_create_secret(garbage)
    assert_no_secret(str(caught.value), secret.hex())


def test_env_secret_overrides_file(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch, secret_hex: str
) -> None:
    monkeypatch.setenv(sec.SECRET_ENV, secret_hex)
    assert load_or_create_secret(tmp_path / "never.secret") == bytes.fromhex(secret_hex)
    assert not (tmp_path / "never.secret").exists()


@pytest.mark.parametrize(
    ("value", "match"), [("zz" * 32, "not valid hex"), ("ab" * 8 + "q", "not valid hex")]
)
def test_bad_env_secret_error_does_not_echo_it(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str, match: str
) -> None:
    monkeypatch.setenv(sec.SECRET_ENV, value)
    with pytest.raises(SecurityConfigError, match=match) as caught:
        load_or_create_secret()
    assert value not in str(caught.value)
    assert "GENAGENT_SECRET" in str(caught.value)


def test_short_secret_is_refused(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sec.SECRET_ENV, "ab" * 8 + "cd" * 7)
    with pytest.raises(SecurityConfigError, match="15 bytes; at least 16"):
        load_or_create_secret()
    with pytest.raises(SecurityConfigError, match="at least 16 bytes"):
        TransportSecurity(b"short")


# -- settings ----------------------------------------------------------------------------------


def test_settings_repr_masks_the_secret_and_refuse_pickling(secret_hex: str) -> None:
    security = TransportSecurity(bytes.fromhex(secret_hex))
    assert repr(security) == (
        "TransportSecurity(secret=<masked>, bind_host='127.0.0.1', advertise_host='127.0.0.1', "
        f"limits={TransportLimits()!r})"
    )
    assert_no_secret(repr(security) + str(security), secret_hex)
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(security)
    assert security.loopback_only
    assert not TransportSecurity(security.secret, bind_host="10.0.0.5").loopback_only


def test_settings_validate_addresses(secret_hex: str) -> None:
    secret = bytes.fromhex(secret_hex)
    assert TransportSecurity(secret, bind_host="10.1.2.3").advertise_host == "10.1.2.3"
    assert TransportSecurity(secret, bind_host="0.0.0.0").advertise_host is None
    wide = TransportSecurity(secret, bind_host="0.0.0.0", advertise_host="10.1.2.3")
    assert wide.advertise_host == "10.1.2.3"
    with pytest.raises(SecurityConfigError, match="IPv4 address literal"):
        TransportSecurity(secret, bind_host="localhost")
    with pytest.raises(SecurityConfigError, match="differs from bind_host"):
        TransportSecurity(secret, bind_host="10.1.2.3", advertise_host="10.1.2.4")
    with pytest.raises(SecurityConfigError, match=r"cannot be 0\.0\.0\.0"):
        TransportSecurity(secret, bind_host="0.0.0.0", advertise_host="0.0.0.0")


def test_check_capabilities(secret_hex: str) -> None:
    loopback = TransportSecurity(bytes.fromhex(secret_hex))
    multi = TransportSecurity(loopback.secret, bind_host="10.1.2.3")
    check_capabilities({"Admin Port": 1900}, loopback)
    check_capabilities({"Convention Address.IPv4": ("127.0.0.1", 1900)}, loopback)
    check_capabilities({"Convention Address.IPv4": "localhost:1900"}, loopback)
    check_capabilities({"Convention Address.IPv4": [("10.9.9.9", 1900)]}, multi)
    with pytest.raises(SecurityConfigError, match="requires 'fork'"):
        check_capabilities({"Process Startup Method": "spawn"}, loopback)
    with pytest.raises(SecurityConfigError, match="on another host"):
        check_capabilities({"Convention Address.IPv4": "10.9.9.9:1900"}, loopback)
    with pytest.raises(SecurityConfigError, match="on another host"):
        check_capabilities({"Convention Address.IPv4": [("10.9.9.9", 1900)]}, loopback)


def test_install_is_idempotent_and_refuses_other_settings(secret_hex: str) -> None:
    result = run_client({"script": "install_checks", "admin_port": 0}, secret_hex=secret_hex)
    assert result["installed"].startswith("TransportSecurity(secret=<masked>")
    assert len(result["errors"]) == 2
    assert all("already installed" in error for error in result["errors"])
    assert result["base_ipaddr"] == "127.0.0.1"
    assert result["bind"] == ["127.0.0.1", 1234]
    assert result["advertised"] == ["127.0.0.1", 1234]
    assert_no_secret(repr(result), secret_hex, bytes.fromhex(secret_hex)[::-1].hex())


def test_install_all_interfaces_needs_explicit_choice(secret_hex: str) -> None:
    result = run_client(
        {"script": "install_wildcard", "admin_port": 0},
        secret_hex=secret_hex,
        extra_env={"THESPIAN_BASE_IPADDR": "127.0.0.2"},
    )
    assert "THESPIAN_BASE_IPADDR=127.0.0.2 contradicts" in result["refused"]
    assert result["bind"] == ["0.0.0.0", 1234]
    assert result["advertised"] == ["127.0.0.2", 1234]


def test_import_check_names_the_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    from thespian.system.transport import TCPTransport

    monkeypatch.setattr(TCPTransport, "serializer", object())
    monkeypatch.delattr(TCPTransport, "ackDataErrMsg")
    with pytest.raises(sec.UnsupportedThespianVersion, match=r"4\.0\.1") as caught:
        sec._check_thespian_internals()
    assert "serializer is not the pickle module" in str(caught.value)
    assert "ackDataErrMsg is missing" in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


# -- hardened nodes ----------------------------------------------------------------------------


def test_hardened_node_serves_asks_tells_children_and_large_messages(
    start_node: Callable[..., Node], secret_hex: str
) -> None:
    node = start_node(secret_hex)
    result = run_client(
        {"admin_port": node.admin_port, "script": "roundtrips"}, secret_hex=secret_hex
    )
    assert result["ask"][0] == "echo" and result["ask"][2] == "hello"
    assert result["told"] == [0, 1, 2]
    assert result["fresh"][0] == "echo" and result["fresh"][2] == "new"
    # Every actor process inherits the transport's poll selector (``_os/poll_selector.py``).
    assert result["selector"] == ["selector", "PollSelector"]
    assert result["spawn"] == "spawned"
    via, parent_pid, child_reply = result["via_child"]
    assert via == "from-child" and child_reply[0] == "echo" and child_reply[2] == "hi"
    assert child_reply[1] != parent_pid  # the child is its own process
    assert result["big"] == ["echo-bytes", 5 * 1024 * 1024, True]
    assert child_reply[1] in node.pids() and result["fresh"][1] in node.pids()
    assert "refused a TCP frame" not in read_log(node)


def test_hardened_node_listens_on_loopback_only(
    start_node: Callable[..., Node], secret_hex: str
) -> None:
    node = start_node(secret_hex)
    run_client({"admin_port": node.admin_port, "script": "roundtrips"}, secret_hex=secret_hex)
    listeners = node.listeners()
    ports = {port for _, _, port in listeners}
    assert node.admin_port in ports
    assert len({pid for pid, _, _ in listeners}) >= 6  # admin, logger, 4+ actors
    assert {addr for _, addr, _ in listeners} == {"127.0.0.1"}, listeners
    ss = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=False)
    if ss.returncode == 0:  # cross-check with ss where it exists
        for line in ss.stdout.splitlines():
            local = line.split()[3]
            if int(local.rsplit(":", 1)[1]) in ports:
                assert local.startswith("127.0.0.1:"), line


def test_payload_attack_on_every_port_runs_nothing(
    start_node: Callable[..., Node], secret_hex: str, tmp_path: Path
) -> None:
    node = start_node(secret_hex)
    ports = {port for _, _, port in node.listeners()}
    assert len(ports) >= 4  # starter's endpoint, admin, logger, echo, parent
    markers = tmp_path / "markers"
    markers.mkdir()
    answers = attack_all("127.0.0.1", ports, markers)
    for name, answer in answers.items():
        # A serving process closes the connection without a byte of reply; an idle starter's
        # endpoint does not read (None): the payload stays queued, and is refused later.
        assert answer in (b"", None), name
    reply = run_client({"admin_port": node.admin_port, "script": "ask_echo"}, secret_hex=secret_hex)
    assert reply["answer"][0] == "echo"
    assert node.stop() == ""  # every process has ended: nothing can still unpickle a payload
    assert sorted(markers.iterdir()) == []
    log = read_log(node)
    served = [name for name, answer in answers.items() if answer is not None]
    assert f"{node.admin_port}-framed" in served
    assert "refused a TCP frame from 127.0.0.1: " in log
    # One line per peer per minute: every attack came from 127.0.0.1, so each process that
    # served one logged it once.
    assert 1 <= log.count("refused a TCP frame") <= len(ports)
    assert "MarkerPayload" not in log and str(markers) not in log
    assert_no_secret(log, secret_hex)


def test_same_attack_runs_code_on_stock_thespian(
    start_node: Callable[..., Node], tmp_path: Path
) -> None:
    node = start_node(None, secure=False)
    listeners = node.listeners()
    assert {addr for _, addr, _ in listeners} == {"0.0.0.0"}  # stock: every interface
    ports = {port for _, _, port in listeners}
    markers = tmp_path / "markers"
    markers.mkdir()
    answers = attack_all("127.0.0.1", ports, markers)
    node.stop()
    created = {path.name for path in markers.iterdir()}
    served = {name for name, answer in answers.items() if answer is not None}
    # Every serving process ran the payload; an idle starter's endpoint may too, later.
    assert f"{node.admin_port}-framed" in created
    assert {name for name in served if name.endswith("framed")} <= created
    assert len(created) >= len(ports) - 1


def test_other_secret_is_rejected_and_logged(
    start_node: Callable[..., Node], secret_hex: str, tmp_path: Path
) -> None:
    node = start_node(secret_hex)
    wrong_hex = secrets.token_hex(32)
    marker = tmp_path / "pwned"
    forged = FrameCodec(bytes.fromhex(wrong_hex)).dumps(MarkerPayload(str(marker)))
    with socket.create_connection(("127.0.0.1", node.admin_port), timeout=10) as conn:
        conn.sendall(b"%d>" % len(forged) + forged)
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(4096):
                reply += chunk
    assert reply == b""  # refused at the header: closed, nothing of ours sent back
    # A whole client process holding another secret cannot use the node at all...
    with pytest.raises(AssertionError, match="not a valid or useable ActorSystem Admin"):
        run_client({"admin_port": node.admin_port, "script": "ask_echo"}, secret_hex=wrong_hex)
    # ...while one with the node's secret can, and the node kept serving throughout.
    client = run_client(
        {"admin_port": node.admin_port, "script": "ask_echo"}, secret_hex=secret_hex
    )
    assert client["answer"][0] == "echo"
    node.stop()
    assert not marker.exists()
    log = read_log(node)
    assert "header tag does not match this node's secret" in log
    assert_no_secret(log + client["_stderr"], secret_hex, wrong_hex)


def test_loopback_convention_admits_only_nodes_with_the_secret(
    start_node: Callable[..., Node], secret_hex: str
) -> None:
    leader_port = free_port()
    convention = ["127.0.0.1", leader_port]
    leader = start_node(secret_hex, admin_port=leader_port, convention=convention, node="L")
    wrong_hex = secrets.token_hex(32)
    start_node(wrong_hex, convention=convention, node="W")
    wait_until(
        lambda: "does not match this node's secret" in read_log(leader),
        20,
        "the leader to reject the registration of the member with another secret",
    )
    start_node(secret_hex, convention=convention, node="M")
    client = {"admin_port": leader_port, "script": "ask_remote"}
    member_answer = run_client({**client, "target": "M"}, secret_hex=secret_hex)
    assert member_answer["answer"][:3:2] == ["node-echo", "across"]
    assert member_answer["answer"][1] not in leader.pids()  # it ran on the member
    refused = run_client({**client, "target": "W", "deadline": 3}, secret_hex=secret_hex)
    assert refused == {"error": "NoCompatibleSystemForActor", "_stderr": refused["_stderr"]}
    assert_no_secret(read_log(leader), secret_hex, wrong_hex)


def test_secrets_never_reach_logs_reprs_or_errors(
    tmp_path: Path,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    secret_hex: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    path = tmp_path / "node.secret"
    secret = load_or_create_secret(path)
    security = TransportSecurity(secret)
    texts += [repr(security), str(security), repr(FrameCodec(secret))]
    for mode in (0o644,):
        path.chmod(mode)
        with pytest.raises(SecurityConfigError) as caught:
            load_or_create_secret(path)
        texts.append(str(caught.value))
        path.chmod(0o600)
    monkeypatch.setenv(sec.SECRET_ENV, secret.hex() + "x")
    with pytest.raises(SecurityConfigError) as bad_hex:
        load_or_create_secret()
    texts += [str(bad_hex.value), repr(bad_hex.value)]
    for bad in ({"secret": secret, "bind_host": "nope"}, {"secret": secret[:8]}):
        with pytest.raises(SecurityConfigError) as caught_settings:
            TransportSecurity(**bad)
        texts.append(str(caught_settings.value))
    texts.append(caplog.text)
    assert_no_secret("\n".join(texts), secret.hex(), secret_hex)


def test_max_frame_bytes_is_a_system_option_enforced_on_both_ends(
    start_node: Callable[..., Node], secret_hex: str
) -> None:
    small = {MAX_FRAME_BYTES_ENV: str(1024 * 1024)}
    node = start_node(secret_hex, extra_env=small)
    client = {"admin_port": node.admin_port, "script": "ask_bytes"}
    fits = run_client({**client, "size": 900_000}, secret_hex=secret_hex, extra_env=small)
    assert fits["answer"] == ["echo-bytes", 900_000]
    # The sender refuses what its own limit refuses, with a typed error naming the limit...
    too_big = run_client({**client, "size": 2_000_000}, secret_hex=secret_hex, extra_env=small)
    assert too_big["error"] == "MessageTooLarge", too_big
    assert "max_frame_bytes of 1048576" in too_big["message"]
    # ...and a node drops, unread, a frame over its limit from a sender with a larger one.
    with socket.create_connection(("127.0.0.1", node.admin_port), timeout=10) as conn:
        conn.sendall(b"2000000>")
        assert conn.recv(1) == b""
    assert "announced length 2000000 exceeds max_frame_bytes 1048576" in read_log(node)
    answer = run_client({**client, "size": 10}, secret_hex=secret_hex, extra_env=small)
    assert answer["answer"] == ["echo-bytes", 10]


#: A script that sets the frame limit in code, as docs/security.md shows.
LIMIT_IN_CODE = """
import sys
import genagent_thespian as g
from support_agents import Recorder

limits = g.TransportLimits(max_frame_bytes=1024 * 1024)
with g.start_system(home=sys.argv[1], transport_limits=limits):
    g.start_agent(Recorder, name="r", backend="scripted", default="ok")
    print(g.ask("r", "x" * 400_000).text)
    try:
        g.ask("r", "x" * 2_000_000)
    except g.MessageTooLarge as error:
        print(type(error).__name__, error)
    print(g.ask("r", "small").text)
"""


def _script_lines(code: str, home: Path, *, timeout: float) -> list[str]:
    """Run ``code`` as a script (the tests folder importable, ``home`` as its argument); it
    must succeed; return the lines it printed."""
    done = subprocess.run(
        [sys.executable, "-c", code, str(home)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_max_frame_bytes_set_in_code_with_start_system(tmp_path: Path) -> None:
    """``start_system(transport_limits=TransportLimits(max_frame_bytes=...))`` (not only the
    environment variable) sets the limit: a call over it raises ``MessageTooLarge`` at once
    and the system carries on."""
    fits, refused, after = _script_lines(LIMIT_IN_CODE, tmp_path / "home", timeout=120)
    assert fits == after == "ok"
    assert refused.startswith("MessageTooLarge ")
    assert "over the transport's max_frame_bytes of 1048576" in refused


OUTPUT_OVER_LIMIT = """
import sys
import genagent_thespian as g
from support_agents import Recorder

limits = g.TransportLimits(max_frame_bytes=1024 * 1024)
with g.start_system(home=sys.argv[1], transport_limits=limits):
    # The prompt fits in a frame, but the answer does not: the scripted backend's events
    # report what it was asked, so the Response is larger than the prompt.
    g.start_agent(Recorder, name="r", backend="scripted", default="ok")
    try:
        g.ask("r", "x" * 700_000, timeout=60)
    except g.GenAgentError as error:
        print(type(error).__name__, error)
    print(g.ask("r", "small", timeout=60).text)
"""


def test_an_answer_over_the_frame_limit_fails_typed_and_the_agent_goes_on(
    tmp_path: Path,
) -> None:
    """Every caller gets one answer even when it cannot cross the transport: a message over
    ``max_frame_bytes`` comes back to its sender as a ``PoisonMessage`` (nobody else hears
    of it), so the agent answers the caller ``MessageTooLarge`` for a reply too large to
    send. Before, the caller waited for its timeout. (The worker's side of the same rule is
    tested in ``tests/actors/test_undeliverable_output.py``.)"""
    reply_too_large, after = _script_lines(OUTPUT_OVER_LIMIT, tmp_path / "home", timeout=240)
    assert reply_too_large.startswith("MessageTooLarge "), reply_too_large
    assert "the answer (Response)" in reply_too_large and "agent='r'" in reply_too_large
    assert after == "ok"


def test_every_test_the_security_guide_names_exists() -> None:
    """docs/security.md ties each claim to a test by name: none of those names may dangle."""
    root = Path(__file__).resolve().parents[2]
    guide = (root / "docs" / "security.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)", guide))
    assert len(named) >= 20
    defined = {
        match
        for path in (root / "tests").rglob("test_*.py")
        for match in re.findall(r"^def (test_[a-z0-9_]+)", path.read_text(), re.MULTILINE)
    }
    assert named - defined == set()
