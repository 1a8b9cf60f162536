"""The web console: its HTTP API against a real node, and end to end in headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from operator_node import Node, node_fixture

from genagent_thespian.cli._console import render_graph_svg
from genagent_thespian.testing import wait_until

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from node_fixture(tmp_path)


def start_console(node: Node) -> str:
    """Start ``genagent console`` on a free HTTP port and return its URL."""
    process = node.spawn("console", "--http-port", "0", "--json")
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "console printed nothing"
    return str(json.loads(line)["url"])


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    """Return ``(status, body)`` of a request (errors included)."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def token_of(url: str) -> str:
    _, page = fetch(url)
    marker = 'name="genagent-token" content="'
    start = page.index(marker) + len(marker)
    token: str = page[start : page.index('"', start)]
    return token


def test_console_api_graph_transcript_stream_and_protection(node: Node) -> None:
    node.start_agent("a", 'script=["hello from a"]', 'to=["b"]', impl="support_operator:Relay")
    node.start_agent("b")
    node.start_agent("s", 'script=[{"slow": "one two three", "seconds": 1.5}]')
    url = start_console(node)
    host = urlsplit(url).netloc

    status, body = fetch(url + "api/fleet")
    assert status == 200
    assert [row["name"] for row in json.loads(body)["agents"]] == ["a", "b", "s"]

    node.json("ask", "a", "hi")
    node.json("notify", "b", '{"say": "from the operator"}')

    def edges() -> dict[tuple[str, str], int]:
        listed = json.loads(fetch(url + "api/graph")[1])["edges"]
        return {(e["from"], e["to"]): e["count"] for e in listed}

    wait_until(lambda: edges() == {("a", "b"): 1, ("(operator)", "b"): 1}, timeout=10.0)
    _, svg = fetch(url + "api/graph.svg")
    assert svg.startswith("<svg") and 'data-from="a" data-to="b"' in svg

    def transcript() -> list[dict[str, Any]]:
        transcript_rows: list[dict[str, Any]] = json.loads(fetch(url + "api/agent?name=b")[1])[
            "transcript"
        ]
        return transcript_rows

    wait_until(lambda: [t["state"] for t in transcript()] == ["completed", "completed"])
    first, second = transcript()
    assert (first["prompt"], first["text"]) == ("from a: hello from a", "ok")
    assert second["prompt"] == "from the operator"
    assert json.loads(fetch(url + "api/agent?name=b")[1])["status"]["turns"] == 2

    # The stream of a running turn, as Server-Sent Events.
    connection = http.client.HTTPConnection(host, timeout=30)
    connection.request("GET", "/api/agent/stream?name=s")
    stream = connection.getresponse()
    assert stream.getheader("Content-Type") == "text/event-stream"

    def next_item() -> dict[str, Any]:
        while True:
            line = stream.readline().decode()
            if line.startswith("data: "):
                return dict(json.loads(line[6:]))

    assert next_item() == {"type": "snapshot", "turn": None}
    node.json("tell", "s", "stream please")
    items = [next_item()]
    while items[-1]["type"] != "turn_end":
        items.append(next_item())
    connection.close()
    assert items[0]["type"] == "turn_start" and items[0]["turn"]["prompt"] == "stream please"
    deltas = [i["event"]["text"] for i in items if i.get("event", {}).get("kind") == "text_delta"]
    assert deltas == ["one", " two", " three"]
    assert items[-1]["turn"]["state"] == "completed"

    # Controls need the page's token in a header, and the console's own Host.
    token = token_of(url)
    halt_url = url + "api/agent/halt?name=b"
    assert fetch(halt_url, method="POST")[0] == 403
    assert fetch(halt_url, method="POST", headers={"X-Genagent-Token": "guess"})[0] == 403
    rebound = {"X-Genagent-Token": token, "Host": f"attacker.example:{urlsplit(url).port}"}
    assert fetch(halt_url, method="POST", headers=rebound)[0] == 403
    assert fetch(url + "api/fleet", headers={"Host": "attacker.example"})[0] == 403
    assert node.status("b")["halted"] is False
    status, body = fetch(halt_url, method="POST", headers={"X-Genagent-Token": token})
    assert (status, json.loads(body)["ok"]) == (200, True)
    assert node.status("b")["halted"] is True
    status, body = fetch(
        url + "api/agent/stop?name=nobody", method="POST", headers={"X-Genagent-Token": token}
    )
    assert status == 404
    assert json.loads(body)["error"].startswith("AgentNotFound: no agent has that name")


def test_graph_svg_escapes_names() -> None:
    svg = render_graph_svg(["<x>"], {("(operator)", "<x>"): 2})
    assert "<x>" not in svg
    assert 'data-to="&lt;x&gt;"' in svg and 'data-from="(operator)"' in svg


# ------------------------------------------------------------------------------ browser


def _browser_available() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} is missing (.ci/install_browser.sh installs it)"
    return None


def _processes_using(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through chromedriver, with a fresh profile; nothing left after."""
    reason = _browser_available()
    if reason is not None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path / "chromium-profile"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        wait_until(lambda: not _processes_using(str(profile)), timeout=15.0)


def _cell(browser: Any, agent: str, column: str) -> str:
    from selenium.common.exceptions import NoSuchElementException

    try:
        element = browser.find_element(
            "css selector", f'#fleet tr[data-agent="{agent}"] td.{column}'
        )
    except NoSuchElementException:
        return ""
    return str(element.text)


@pytest.mark.browser
def test_clicking_interrupt_ends_the_running_turn(node: Node, browser: Any) -> None:
    node.start_agent(
        "worker",
        'script=[{"slow": "this would take a minute", "seconds": 60}, '
        '{"slow": "streamed into the page", "seconds": 1.5}]',
    )
    node.start_agent("other")
    url = start_console(node)
    browser.get(url)
    wait_until(lambda: _cell(browser, "worker", "state") == "idle", timeout=10.0)
    assert _cell(browser, "other", "halted") == "no"

    ref = node.json("tell", "worker", "take your time")["ref"]
    wait_until(lambda: _cell(browser, "worker", "state") == "processing", timeout=10.0)
    wait_until(lambda: _cell(browser, "worker", "age").endswith("s/600s"), timeout=5.0)
    button = browser.find_element(
        "css selector", '#fleet tr[data-agent="worker"] button[data-action="interrupt"]'
    )
    button.click()
    clicked = time.monotonic()
    wait_until(
        lambda: _cell(browser, "worker", "state") == "idle",
        timeout=1.0,
        message="the table did not show the interrupted turn within a second",
    )
    assert time.monotonic() - clicked < 1.0
    failed = node.run("poll", "worker", ref, "--json")
    assert json.loads(failed.stdout)["error"]["type"] == "TurnInterrupted"
    assert browser.find_element("id", "flash").text == "interrupt worker: done"

    # Halt from the page shows in the table too.
    browser.find_element(
        "css selector", '#fleet tr[data-agent="other"] button[data-action="halt"]'
    ).click()
    wait_until(lambda: _cell(browser, "other", "halted") == "halted", timeout=2.0)
    assert node.status("other")["halted"] is True

    # The agent page streams the current turn's events, then shows it in the transcript.
    browser.get(url + "agent?name=worker")
    wait_until(lambda: browser.find_element("id", "current-prompt").text == "(idle)")
    node.json("tell", "worker", "stream it")
    wait_until(lambda: "streamed" in browser.find_element("id", "events").text, timeout=10.0)
    wait_until(
        lambda: "streamed into the page" in browser.find_element("id", "transcript").text,
        timeout=10.0,
    )
    assert "> stream it" in browser.find_element("id", "current-prompt").text


def test_install_browser_script_exists() -> None:
    script = Path(__file__).resolve().parents[2] / ".ci" / "install_browser.sh"
    assert script.exists() and os.access(script, os.X_OK)
    assert "chromium-driver" in script.read_text()
    assert shutil.which("bash")
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
