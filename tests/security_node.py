"""Run one side of a transport security test in its own process.

``python security_node.py '{"mode": "node", ...}'`` starts a ``multiprocTCPBase`` system
(hardened unless ``"secure": false``), creates the named ``echo``/``parent`` actors, prints one
JSON line (admin pid, process group) and shuts the system down when ``stop`` arrives on stdin.

``python security_node.py '{"mode": "client", "script": ...}'`` attaches to a running system,
runs one script and prints its result as one JSON line. ``"mode": "probe"`` reports which
ports refuse a connection; ``"mode": "attack"`` sends the pickle payload to ports (used from
another network namespace).

The node secret comes from ``$GENAGENT_SECRET``; the thespian internal log from
``$THESPLOG_FILE``. Running the stock (unpatched) system in its own process keeps the test
process free of the patch and vice versa.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from security_support import (
    Echo,
    NodeEcho,
    Parent,
    attack_all,
    connect_refused,
    find_listener_pid,
    wait_until,
)
from thespian.actors import ActorSystem, NoCompatibleSystemForActor

BASE = "multiprocTCPBase"


def _harden(config: dict[str, Any]) -> None:
    if not config.get("secure", True):
        return
    from genagent_thespian._os.security import check_capabilities, harden_transport

    security = harden_transport(bind_host=config.get("bind_host", "127.0.0.1"))
    check_capabilities(_capabilities(config), security)


def _capabilities(config: dict[str, Any]) -> dict[str, Any]:
    caps: dict[str, Any] = {"Admin Port": config["admin_port"]}
    if config.get("convention"):
        caps["Convention Address.IPv4"] = tuple(config["convention"])
    if config.get("node"):
        caps["node"] = config["node"]
    return caps


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def run_node(config: dict[str, Any]) -> None:
    _harden(config)
    asys = ActorSystem(BASE, capabilities=_capabilities(config), transientUnique=True)
    try:
        echo = asys.createActor(Echo, globalName="echo")
        asys.createActor(Parent, globalName="parent")
        first = asys.ask(echo, "ready", 10)
        if not first:
            raise RuntimeError("echo did not answer")
        admin_pid = wait_until(
            lambda: find_listener_pid(config["admin_port"]), 10, "the admin's listener"
        )
        _emit({"admin_pid": admin_pid, "pgid": os.getpgid(admin_pid), "starter": os.getpid()})
        sys.stdin.readline()
    finally:
        asys.shutdown()


def _attach(config: dict[str, Any]) -> Any:
    return ActorSystem(BASE, capabilities=_capabilities(config), transientUnique=True)


def run_client(config: dict[str, Any]) -> dict[str, Any]:
    script = config["script"]
    if script == "install_checks":
        return install_checks(config)
    if script == "install_wildcard":
        return install_wildcard()
    _harden(config)
    asys = _attach(config)
    if script == "roundtrips":
        return roundtrips(asys)
    if script == "ask_echo":
        echo = asys.createActor(Echo, globalName="echo")
        return {"answer": asys.ask(echo, config.get("text", "ping"), 10)}
    if script == "ask_bytes":
        return ask_bytes(asys, config["size"])
    if script == "ask_remote":
        return ask_remote(asys, config["target"], config.get("deadline", 30))
    raise ValueError(f"unknown script {script}")


def roundtrips(asys: Any) -> dict[str, Any]:
    echo = asys.createActor(Echo, globalName="echo")
    result: dict[str, Any] = {"ask": asys.ask(echo, "hello", 10)}
    for n in range(3):
        asys.tell(echo, ("tell", n))
    result["told"] = asys.ask(echo, "told?", 10)
    fresh = asys.createActor(Echo)
    result["fresh"] = asys.ask(fresh, "new", 10)
    result["selector"] = asys.ask(fresh, "selector?", 10)
    parent = asys.createActor(Parent, globalName="parent")
    result["spawn"] = asys.ask(parent, "spawn", 10)
    result["via_child"] = asys.ask(parent, ("via-child", "hi"), 10)
    big = os.urandom(5 * 1024 * 1024)
    answer = asys.ask(echo, big, 30)
    result["big"] = [answer[0], answer[1], answer[2] == big[-16:]] if answer else None
    return result


def ask_bytes(asys: Any, size: int) -> dict[str, Any]:
    """Ask the echo actor with a *size*-byte message; report the answer or the error."""
    echo = asys.createActor(Echo, globalName="echo")
    try:
        answer = asys.ask(echo, os.urandom(size), 30)
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"answer": answer[:2] if answer else None}


def ask_remote(asys: Any, target: str, wait: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while True:  # the member joins the convention asynchronously
        try:
            remote = asys.createActor(NodeEcho, targetActorRequirements={"node": target})
            break
        except NoCompatibleSystemForActor:
            if time.monotonic() > deadline:
                return {"error": "NoCompatibleSystemForActor"}
            time.sleep(0.2)
    return {"answer": asys.ask(remote, "across", 10), "address": str(remote)}


def install_checks(config: dict[str, Any]) -> dict[str, Any]:
    """Exercise installation rules in a fresh process (installation cannot be undone)."""
    import logging

    from genagent_thespian._os import security as sec

    logging.basicConfig(level=logging.DEBUG)
    secret = bytes.fromhex(os.environ["GENAGENT_SECRET"])
    first = sec.harden_transport()
    assert sec.installed_transport_security() is first
    sec.install_transport_security(sec.TransportSecurity(secret))  # same settings: no-op
    assert sec.installed_transport_security() is first
    errors = []
    for other in (
        sec.TransportSecurity(secret[::-1]),
        sec.TransportSecurity(secret, bind_host="0.0.0.0", advertise_host="127.0.0.1"),
    ):
        try:
            sec.install_transport_security(other)
        except sec.SecurityConfigError as exc:
            errors.append(str(exc))
    from thespian.system.transport import IPBase

    address = IPBase.TCPv4ActorAddress(None, 1234, external=True)
    return {
        "installed": repr(sec.installed_transport_security()),
        "errors": errors,
        "base_ipaddr": os.environ.get("THESPIAN_BASE_IPADDR"),
        "bind": list(address.bindArgs[0]),
        "advertised": list(address.connectArgs[0]),
    }


def install_wildcard() -> dict[str, Any]:
    """All interfaces with an explicit advertised address; a contradicting preset is refused."""
    from genagent_thespian._os import security as sec

    secret = bytes.fromhex(os.environ["GENAGENT_SECRET"])
    preset = os.environ.get("THESPIAN_BASE_IPADDR")
    try:
        sec.install_transport_security(sec.TransportSecurity(secret, bind_host="127.0.0.1"))
    except sec.SecurityConfigError as exc:
        refused = str(exc)
    else:
        raise AssertionError(f"THESPIAN_BASE_IPADDR={preset} was not refused")
    wide = sec.TransportSecurity(secret, bind_host="0.0.0.0", advertise_host=preset)
    sec.install_transport_security(wide)
    from thespian.system.transport import IPBase

    address = IPBase.TCPv4ActorAddress(None, 1234, external=True)
    return {
        "refused": refused,
        "bind": list(address.bindArgs[0]),
        "advertised": list(address.connectArgs[0]),
    }


def named_attacks(host: str, ports: list[int], flood_per_port: int) -> dict[str, Any]:
    """Issue 12's table, run from wherever this process is (another network namespace)."""
    from transport_attacks import NEGATIVE_PREFIX_FRAME, half_open_flood, send_and_wait_for_close

    result: dict[str, Any] = {
        "negative_prefix_closed": {
            str(port): send_and_wait_for_close(host, port, NEGATIVE_PREFIX_FRAME) for port in ports
        }
    }
    body = 100 * 1000 * 1000
    sent, closed = _stream(host, ports[0], b"%d>" % body, body)
    result["big_body"] = {"sent": sent, "closed": closed}
    with half_open_flood() as flood:
        for port in ports:
            flood.open(host, port, flood_per_port // 2)
            flood.open(host, port, flood_per_port // 2, send=b"12")
        result["flood_opened"] = len(flood.sockets)
        with contextlib.suppress(AssertionError):  # the test compares the counts
            wait_until(lambda: flood.closed_by_receiver() == len(flood.sockets), 30, "closing")
        result["flood_closed_by_node"] = flood.closed_by_receiver()
    return result


def _stream(host: str, port: int, prefix: bytes, total: int) -> tuple[int, bool]:
    import errno
    import socket

    chunk = os.urandom(1024 * 1024)
    sent = 0
    with socket.create_connection((host, port), timeout=30) as conn:
        try:
            conn.sendall(prefix)
            while sent < total:
                conn.sendall(chunk[: total - sent])
                sent += min(len(chunk), total - sent)
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                raise
            return sent, True
        return sent, conn.recv(1) == b""


def main() -> None:
    config = json.loads(sys.argv[1])
    if config["mode"] == "node":
        run_node(config)
    elif config["mode"] == "probe":
        _emit({str(port): connect_refused(config["host"], port) for port in config["ports"]})
    elif config["mode"] == "named_attacks":
        _emit(named_attacks(config["host"], config["ports"], config["flood_per_port"]))
    elif config["mode"] == "attack":
        answers = attack_all(config["host"], config["ports"], Path(config["marker_dir"]))
        _emit({name: answer is not None for name, answer in answers.items()})
    else:
        _emit(run_client(config))


if __name__ == "__main__":
    main()
