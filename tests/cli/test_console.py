"""The web console: its HTTP API against a real node, and end to end in headless Chromium."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from operator_node import Node, node_fixture

from genagent_thespian import AgentSystem, SystemNotRunning
from genagent_thespian.cli import _console
from genagent_thespian.cli._console import render_graph_svg
from genagent_thespian.testing import open_gate, wait_until

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
    assert [row["label"] for row in json.loads(body)["agents"]] == ["idle", "idle", "idle"]

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
    assert stream.getheader("Content-Type", "").startswith("text/event-stream")

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


def test_a_stopping_node_is_reported_unreachable_not_as_a_console_error(
    agent_system: AgentSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that is stopping still accepts connections while its admin refuses calls
    (``SystemNotRunning``): the fleet request must answer 503 "node unreachable", not 500."""

    def stopping(system: AgentSystem) -> list[dict[str, Any]]:
        raise SystemNotRunning("the node on port 1 does not answer")

    console = _console.Console(agent_system, port=0)
    try:
        monkeypatch.setattr(_console, "fleet_rows", stopping)
        with pytest.raises(_console._NodeUnreachable, match="does not answer"):
            asyncio.run(console.fleet())
    finally:
        console.close()


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


#: Upper bound for the page to show a change: generous, since a loaded CI machine is slow;
#: the console's latency is measured in bench/, never asserted here.
_UI_BOUND = 30.0


def _cell(browser: Any, agent: str, column: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        element = browser.find_element(
            "css selector", f'#fleet tr[data-agent="{agent}"] td.{column}'
        )
        return str(element.text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""  # no such row, or the row was just removed


def _button(browser: Any, agent: str, action: str) -> Any:
    return browser.find_element(
        "css selector", f'#fleet tr[data-agent="{agent}"] button[data-action="{action}"]'
    )


def _click(browser: Any, agent: str, action: str) -> None:
    """Click the agent's button, again if its row was re-rendered under the click."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def clicked() -> bool:
        try:
            _button(browser, agent, action).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    wait_until(clicked, timeout=_UI_BOUND, message=f"could not click {action} of {agent}")


def _enabled(browser: Any, agent: str) -> set[str]:
    """The agent's enabled buttons; none while its row is being re-rendered."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    actions = ("interrupt", "halt", "resume", "stop")
    try:
        return {a for a in actions if _button(browser, agent, a).is_enabled()}
    except (NoSuchElementException, StaleElementReferenceException):
        return set()


def _screenshot(browser: Any, name: str) -> None:
    """Save a screenshot when GENAGENT_SCREENSHOTS names a folder (docs/img for the docs)."""
    folder = os.environ.get("GENAGENT_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / name))


TOOLS_TURN = (
    '{"tools": [{"name": "Bash", "input": {"command": "pytest -q tests/"}, '
    '"output": "12 passed in 0.8s"}, {"name": "Edit", "input": {"path": "lib/foo.py"}, '
    '"output": "old_string not found in lib/foo.py", "error": true}], '
    '"text": "The tests pass. I could not apply the edit to lib/foo.py: the text I meant to '
    'replace is not there any more. Tell me which version to keep."}'
)


@pytest.mark.browser
def test_the_console_in_a_browser(node: Node, browser: Any, tmp_path: Path) -> None:
    # The second turn streams its first word, then holds until the test opens the gate.
    hold = tmp_path / "let-the-turn-finish"
    node.start_agent(
        "worker",
        'script=[{"slow": "this would take a minute", "seconds": 60}, '
        '{"slow": "streamed into the page word by word", "seconds": 3, '
        f'"hold": {json.dumps(str(hold))}}}]',
    )
    node.start_agent("other")
    node.start_agent("archivist", "durable=true", "hibernate_after=1")
    node.start_agent("coder", f"script=[{TOOLS_TURN}]")
    node.start_agent(
        "flaky",
        'script=[{"fail": "overloaded", "message": "529 the provider is overloaded"}]',
    )
    url = start_console(node)
    node.json("ask", "coder", "Run the tests and fix lib/foo.py")
    node.json("ask", "archivist", "File this away")
    assert node.run("ask", "flaky", "hello").returncode == 1

    browser.get(url)
    wait_until(lambda: _cell(browser, "worker", "state") == "idle", timeout=_UI_BOUND)
    # Nothing to interrupt or resume.
    wait_until(lambda: _enabled(browser, "worker") == {"halt", "stop"}, timeout=_UI_BOUND)

    # Failures are marked in the fleet table, with the last error.
    wait_until(lambda: _cell(browser, "flaky", "failures") == "1", timeout=_UI_BOUND)
    flaky_failures = browser.find_element(
        "css selector", '#fleet tr[data-agent="flaky"] td.failures'
    )
    assert "bad" in (flaky_failures.get_attribute("class") or "")
    assert _cell(browser, "flaky", "last_error").startswith("BackendError: 529 the provider")
    assert _cell(browser, "worker", "failures") == "0"

    ref = node.json("tell", "worker", "take your time")["ref"]
    wait_until(lambda: _cell(browser, "worker", "state") == "processing", timeout=_UI_BOUND)
    wait_until(lambda: _cell(browser, "worker", "age").endswith("s/600s"), timeout=_UI_BOUND)
    wait_until(lambda: "interrupt" in _enabled(browser, "worker"), timeout=_UI_BOUND)
    node.json("halt", "other")
    wait_until(lambda: _cell(browser, "other", "state") == "halted", timeout=_UI_BOUND)
    wait_until(lambda: _enabled(browser, "other") == {"resume", "stop"}, timeout=_UI_BOUND)
    for target in ("other", "coder", "coder"):  # edges for the graph
        node.json("notify", target, '{"ci": "red"}')
    wait_until(lambda: browser.find_elements("css selector", "#graph line.edge"), timeout=_UI_BOUND)
    # The durable agent, idle for its hibernate_after, sleeps with no process.
    wait_until(lambda: _cell(browser, "archivist", "state") == "hibernated", timeout=_UI_BOUND)
    assert node.status("archivist")["hibernated"] is True
    _screenshot(browser, "console.png")

    _click(browser, "worker", "interrupt")
    wait_until(
        lambda: _cell(browser, "worker", "state") == "idle",
        timeout=_UI_BOUND,
        message="the table did not show the interrupted turn",
    )
    failed = node.run("poll", "worker", ref, "--json")
    assert json.loads(failed.stdout)["error"]["type"] == "TurnInterrupted"
    wait_until(
        lambda: browser.find_element("id", "flash").text == "interrupt worker: done",
        timeout=_UI_BOUND,
    )
    wait_until(
        lambda: _cell(browser, "worker", "last_error").startswith("TurnInterrupted"),
        timeout=_UI_BOUND,
    )

    # Stop asks first: dismissing keeps the agent, accepting stops it.
    _click(browser, "other", "stop")
    alert = browser.switch_to.alert
    assert "Stop agent other for good?" in alert.text
    alert.dismiss()
    assert node.status("other")["halted"] is True
    _click(browser, "other", "stop")
    browser.switch_to.alert.accept()
    wait_until(lambda: _cell(browser, "other", "state") == "", timeout=_UI_BOUND)

    # The agent page: one entry per turn, text as text, tools as collapsible blocks.
    browser.get(url + "agent?name=coder")
    wait_until(
        lambda: len(browser.find_elements("css selector", "#turns li.turn")) == 1,
        timeout=_UI_BOUND,
    )
    turn = browser.find_element("css selector", "#turns li.turn")
    assert turn.find_element("css selector", ".prompt").text.startswith("> Run the tests")
    tools = turn.find_elements("css selector", "details.tool")
    assert [" ".join(t.find_element("css selector", "summary").text.split()) for t in tools] == [
        "✓ Bash pytest -q tests/",
        "✗ Edit lib/foo.py",
    ]
    assert "error" in (tools[1].get_attribute("class") or "")
    assert not tools[0].find_element("css selector", "pre.output").is_displayed()  # collapsed
    tools[1].find_element("css selector", "summary").click()
    output = tools[1].find_element("css selector", "pre.output")
    assert output.is_displayed() and "old_string not found" in output.text
    (text,) = turn.find_elements("css selector", ".part.text")
    assert text.text.startswith("The tests pass.")
    _screenshot(browser, "console-agent.png")

    # A failed turn is highlighted; a running one streams into its own entry.
    browser.get(url + "agent?name=worker")
    wait_until(
        lambda: browser.find_elements("css selector", "#turns li.turn.failed"), timeout=_UI_BOUND
    )
    assert "interrupted" in browser.find_element("css selector", "li.turn.failed .error").text
    assert (
        browser.find_element("css selector", 'button[data-action="interrupt"]').is_enabled()
        is False
    )
    node.json("tell", "worker", "stream it")
    wait_until(
        lambda: browser.find_elements("css selector", "#turns li.turn.running"), timeout=_UI_BOUND
    )
    running = browser.find_element("css selector", "#turns li.turn.running")
    wait_until(
        lambda: (
            [p.text for p in running.find_elements("css selector", ".part.text")] == ["streamed"]
        ),
        timeout=_UI_BOUND,
    )
    assert node.status("worker")["state"] == "processing"  # held mid-stream
    _screenshot(browser, "console-streaming.png")
    open_gate(hold)
    wait_until(lambda: "streamed into" in running.text, timeout=_UI_BOUND)
    wait_until(
        lambda: "completed" in running.find_element("css selector", ".meta").text, timeout=_UI_BOUND
    )
    assert running.find_element("css selector", ".part.text").text == (
        "streamed into the page word by word"
    )

    # The node goes away: the fleet page says so (its poll interval is 1 s).
    browser.get(url)
    wait_until(lambda: _cell(browser, "worker", "state") == "idle", timeout=_UI_BOUND)
    node.run("node", "stop")
    banner = browser.find_element("id", "unreachable")
    wait_until(banner.is_displayed, timeout=_UI_BOUND, message="no 'node unreachable'")
    assert "node unreachable" in banner.text
    # No control is left enabled. The rows may be gone: a stopping node stops its agents
    # one by one, and the page may have shown a fleet without them before the banner.
    assert browser.find_elements("css selector", "#fleet button:enabled") == []


def test_install_browser_script_exists() -> None:
    script = Path(__file__).resolve().parents[2] / ".ci" / "install_browser.sh"
    assert script.exists() and os.access(script, os.X_OK)
    assert "chromium-driver" in script.read_text()
    assert shutil.which("bash")
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
