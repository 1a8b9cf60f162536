"""Benchmark 7, CLI turns: the real ``claude`` and ``codex`` programs through the framework,
beside the official SDKs and a bare process, all against one :class:`FakeLLMServer`.

claude (2.1.331, the same binary for every contender, the same prompt and answer):

* ``framework``: ``start_agent(..., backend="claude")`` in its long-lived (stream) mode,
  one ``g.ask`` per turn (Thespian ``multiprocTCPBase``; the turns run in the agent's
  process, ``turn_worker="auto"``);
* ``sdk``: the official ``claude-agent-sdk`` ``ClaudeSDKClient`` (``cli_path`` = the same
  binary), one ``query`` + ``receive_response`` per turn on an asyncio loop;
* ``bare``: a ``claude -p --input-format stream-json`` process driven over pipes by hand,
  the floor (nothing but the CLI).

Every contender runs with the same system prompt, in two configurations: the SDK's default
(``system_prompt=""``: the CLI's built-in prompt is replaced by an empty one) and Claude Code's
own prompt (the framework's default; the SDK's ``{"type": "preset", "preset": "claude_code"}``).
The CLI sends a 7,440-character system prompt in the second and a 235-character one in the
first: with one contender in each, they would not be doing the same work. Every claude figure
is reported for both (the ``_claude_code_prompt`` keys), but for memory and cold start, which
run with the SDK's default only.

Per-turn latency is sampled in interleaved blocks (p50/p99); cold start is the time from
nothing to the first answer; memory is the PSS of each contender's whole process tree per
live agent (psutil), and the framework's own share (its processes, CLI excluded) beside
a raw Thespian actor with its child actor. The fleet phase runs 20 agents x 5 turns
(threads calling ``g.ask``) against 20 SDK clients on one asyncio loop, three alternating
runs each (median): wall time, CPU seconds of every process involved (not the sampler
thread that reads their memory), peak PSS, and the framework's PSS per agent in the fleet.
On 2 cores that fleet keeps both busy; a small fleet (2 agents x 25 turns, four runs each)
beside it measures the same with cores to spare.

codex (0.169.0): the backend's ``app_server`` and ``exec`` modes through ``start_agent``,
per-turn p50/p99 (the ``openai-codex`` Python SDK is reported as skipped when it is not
installed). ``claude-agent-sdk`` and ``psutil`` come from the ``bench`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import genagent_thespian as g
from genagent_thespian.testing import FakeLLMServer, Text

from ._actors import BenchAgent, CrashParent
from ._common import Figure, RawSystem, Result, agent_system, interleaved, summarize

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".ci" / "tools" / "node_modules" / ".bin"
PROMPT = "Say ok."
ANSWER = "ok"
KEY = "sk-bench-not-a-real-key"
#: The system-prompt configurations every contender is measured in, the same on every side:
#: ``sdk`` is the SDK's default (an empty system prompt), ``claude_code`` the CLI's own prompt.
PROMPTS = ("sdk", "claude_code")


def _binary(name: str) -> str | None:
    path = os.environ.get(f"GENAGENT_{name.upper()}_BIN") or str(TOOLS / name)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {
            "rounds": 2,
            "per_round": 2,
            "warmup": 1,
            "cold": 1,
            "fleet": 3,
            "fleet_turns": 2,
            "fleet_rounds": 1,
            "small_fleet": 2,
            "small_fleet_turns": 2,
            "small_rounds": 1,
        }
    return {
        "rounds": 10,
        "per_round": 10,
        "warmup": 3,
        "cold": 3,
        "fleet": 20,
        "fleet_turns": 5,
        "fleet_rounds": 3,
        "small_fleet": 2,
        "small_fleet_turns": 25,
        "small_rounds": 4,
    }


def _start_claude_agent(
    system: Any, name: str, binary: str, env: dict[str, str], workdir: Path, prompt: str
) -> None:
    """Start the framework's contender: a claude agent with ``prompt``'s system prompt."""
    g.start_agent(
        BenchAgent,
        name=name,
        backend="claude",
        system=system,
        binary=binary,
        cwd=str(workdir),
        env=env,
        **({"system_prompt": ""} if prompt == "sdk" else {}),
    )


def _suffix(prompt: str) -> str:
    """The figure-key suffix of a configuration (none for the SDK's default)."""
    return "" if prompt == "sdk" else f"_{prompt}_prompt"


def _prompt_label(prompt: str) -> str:
    """The label prefix of a configuration: which system prompt every side ran with."""
    return "[SDK prompt]" if prompt == "sdk" else "[Claude Code prompt]"


def _claude_env(home: Path, url: str) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": url,
        "NO_COLOR": "1",
    }


# ============================================================================ memory


def _tree(pid: int) -> list[Any]:
    import psutil

    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def _pss_mib(processes: list[Any]) -> float:
    import psutil

    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_full_info().pss
    return total / (1024 * 1024)


def _cpu_s(processes: list[Any]) -> float:
    import psutil

    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _cli_pids(workdir: Path) -> list[int]:
    """Group leaders of the CLI processes running in ``workdir``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            pid = int(entry)
            if os.readlink(f"/proc/{pid}/cwd") == str(workdir) and os.getpgid(pid) == pid:
                found.append(pid)
    return found


# ============================================================================ contenders


class _Bare:
    """The floor: one ``claude`` stream-json process driven over pipes by hand."""

    def __init__(self, binary: str, env: dict[str, str], cwd: Path, prompt: str = "sdk") -> None:
        argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--input-format", "stream-json"]
        if prompt == "sdk":
            argv += ["--system-prompt", ""]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
        )

    def turn(self) -> None:
        line = {"type": "user", "message": {"role": "user", "content": PROMPT}}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps(line) + "\n").encode())
        self.process.stdin.flush()
        for raw in self.process.stdout:
            if b'"type":"result"' in raw:
                return
        raise RuntimeError("claude ended without a result")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait(5)


class _Loop:
    """An asyncio loop on its own thread, for the SDK clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class _Sdk:
    """The official ``ClaudeSDKClient``, connected once, one query per turn."""

    def __init__(
        self, loop: _Loop, binary: str, env: dict[str, str], cwd: Path, prompt: str = "sdk"
    ) -> None:
        from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient

        options = ClaudeAgentOptions(cli_path=binary, cwd=str(cwd), env=env)
        if prompt == "claude_code":
            options.system_prompt = {"type": "preset", "preset": "claude_code"}
        self.loop = loop
        self.client = ClaudeSDKClient(options=options)
        loop.run(self.client.connect())

    async def aturn(self) -> None:
        from claude_agent_sdk import ResultMessage

        await self.client.query(PROMPT)
        async for message in self.client.receive_response():
            if isinstance(message, ResultMessage):
                return

    def turn(self) -> None:
        self.loop.run(self.aturn())

    def cli_pid(self) -> int | None:
        transport = getattr(self.client, "_transport", None)
        process = getattr(transport, "_process", None)
        return getattr(process, "pid", None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run(self.client.disconnect(), timeout=30)


@contextlib.contextmanager
def _workdirs(count: int) -> Iterator[list[Path]]:
    with tempfile.TemporaryDirectory(prefix="genagent-bench-cli-") as root:
        dirs = []
        for index in range(count):
            path = Path(root) / f"w{index}"
            path.mkdir()
            dirs.append(path)
        yield dirs


# ============================================================================ claude


def _claude(result: Result, sizes: dict[str, int], binary: str, server: FakeLLMServer) -> None:
    home = Path(tempfile.mkdtemp(prefix="genagent-bench-home-"))
    env = _claude_env(home, server.url)
    loop = _Loop()
    try:
        with (
            agent_system() as system,
            RawSystem() as raw,
            _workdirs(3 * len(PROMPTS) + sizes["cold"] * 3) as dirs,
        ):
            # The memory floor is made now, beside the agent: both systems forked from this
            # process in the same state, so their shared pages are comparable.
            raw_pair = _raw_pair(raw)
            contenders: dict[str, tuple[str, _Sdk, _Bare, Path]] = {}
            try:
                for index, prompt in enumerate(PROMPTS):
                    framework_dir, sdk_dir, bare_dir = dirs[index * 3 : index * 3 + 3]
                    name = f"c_{prompt}"
                    _start_claude_agent(system, name, binary, env, framework_dir, prompt)
                    contenders[prompt] = (
                        name,
                        _Sdk(loop, binary, env, sdk_dir, prompt),
                        _Bare(binary, env, bare_dir, prompt),
                        framework_dir,
                    )
                operations: dict[str, Callable[[], Any]] = {}
                for prompt, (name, sdk, bare, _) in contenders.items():
                    operations[f"framework{_suffix(prompt)}"] = functools.partial(
                        g.ask, name, PROMPT, system=system
                    )
                    operations[f"sdk{_suffix(prompt)}"] = sdk.turn
                    operations[f"bare{_suffix(prompt)}"] = bare.turn
                samples = interleaved(
                    operations,
                    rounds=sizes["rounds"],
                    per_round=sizes["per_round"],
                    warmup=sizes["warmup"],
                )
                for prompt in PROMPTS:
                    _latency_figures(result, samples, prompt)
                name, sdk, bare, framework_dir = contenders["sdk"]
                _memory_figures(result, system, name, framework_dir, sdk, bare, raw_pair)
            finally:
                for name, sdk, bare, _ in contenders.values():
                    bare.close()
                    sdk.close()
                    g.stop(name, system=system)
            _cold_figures(result, sizes, system, binary, env, loop, dirs[3 * len(PROMPTS) :])
            for prompt in PROMPTS:
                _fleet_figures(result, sizes, system, binary, env, loop, prompt)
            _small_fleet_figures(result, sizes, system, binary, env, loop)
    finally:
        loop.close()
        subprocess.run(["rm", "-rf", str(home)], check=False)


def _latency_figures(result: Result, samples: dict[str, list[float]], prompt: str) -> None:
    suffix = _suffix(prompt)
    stats = {
        contender: summarize(samples[f"{contender}{suffix}"])
        for contender in ("framework", "sdk", "bare")
    }
    result.details[f"claude_turn{suffix}"] = stats
    for percentile, target in (("p50", 1.05), ("p99", 1.2)):
        result.add(
            Figure(
                key=f"claude_turn_{percentile}{suffix}",
                label=(
                    f"{_prompt_label(prompt)} claude turn {percentile}, start_agent (stream mode) "
                    "vs ClaudeSDKClient"
                ),
                unit="ms",
                value=stats["framework"][f"{percentile}_ms"],
                floor=stats["sdk"][f"{percentile}_ms"],
                floor_label="claude-agent-sdk ClaudeSDKClient",
                samples=len(samples[f"framework{suffix}"]),
                target=f"<= {target}x",
                target_ratio=target,
            )
        )
        result.add(
            Figure(
                key=f"claude_turn_{percentile}_vs_bare{suffix}",
                label=(
                    f"{_prompt_label(prompt)} claude turn {percentile}, start_agent vs a bare "
                    "stream-json process"
                ),
                unit="ms",
                value=stats["framework"][f"{percentile}_ms"],
                floor=stats["bare"][f"{percentile}_ms"],
                floor_label="bare claude --input-format stream-json",
                samples=len(samples[f"framework{suffix}"]),
            )
        )


def _memory_figures(
    result: Result,
    system: Any,
    name: str,
    framework_dir: Path,
    sdk: _Sdk,
    bare: _Bare,
    raw_pair: list[Any],
) -> None:
    (cli,) = _cli_pids(framework_dir)
    agent_pid = g.status(name, system=system).pid
    cli_tree = {p.pid for p in _tree(cli)}
    # The CLI is the agent's child (or its worker's): the agent's tree minus the CLI's is
    # the framework's own share.
    framework = [p for p in _tree(agent_pid) if p.pid not in cli_tree]
    own = _pss_mib(framework)
    with_cli = own + _pss_mib(_tree(cli))
    sdk_pid = sdk.cli_pid()
    sdk_tree = _pss_mib(_tree(sdk_pid)) if sdk_pid else float("nan")
    bare_tree = _pss_mib(_tree(bare.process.pid))
    raw_pss = _pss_mib(raw_pair)
    result.details["claude_pss_mib"] = {
        "framework_agent_worker": own,
        "raw_thespian_parent_and_child": raw_pss,
        "framework_with_cli": with_cli,
        "sdk_cli_tree": sdk_tree,
        "bare_cli_tree": bare_tree,
        "framework_pids": [p.pid for p in framework],
    }
    result.add(
        Figure(
            key="claude_framework_pss_per_agent",
            label=(
                f"{_prompt_label('sdk')} framework PSS of one live claude agent (its "
                "processes, CLI excluded)"
            ),
            unit="MiB",
            value=own,
            floor=raw_pss,
            floor_label="a raw Thespian actor and its child actor (two processes)",
            samples=1,
            target="<= 20 MiB",
            target_max=20.0,
        )
    )
    result.add(
        Figure(
            key="claude_tree_pss_per_agent",
            label=(
                f"{_prompt_label('sdk')} PSS per live agent, whole tree (framework processes "
                "+ claude) vs SDK's CLI"
            ),
            unit="MiB",
            value=with_cli,
            floor=sdk_tree,
            floor_label="PSS of the SDK's claude process tree (the client lives in this process)",
            samples=1,
        )
    )


def _raw_pair(raw: RawSystem) -> list[Any]:
    """The floor of two actor processes: a raw Thespian actor and the child actor it made."""
    import psutil

    parent = raw.create(CrashParent)
    reply = raw.asys.ask(parent, ("spawn",), 10.0)
    child = psutil.Process(int(reply[1]))
    return [psutil.Process(child.ppid()), child]


def _cold_figures(
    result: Result,
    sizes: dict[str, int],
    system: Any,
    binary: str,
    env: dict[str, str],
    loop: _Loop,
    dirs: list[Path],
) -> None:
    cold: dict[str, list[float]] = {"framework": [], "sdk": [], "bare": []}
    for index in range(sizes["cold"]):
        framework_dir, sdk_dir, bare_dir = dirs[index * 3 : index * 3 + 3]
        name = f"cold{index}"
        started = time.perf_counter()
        _start_claude_agent(system, name, binary, env, framework_dir, "sdk")
        g.ask(name, PROMPT, system=system)
        cold["framework"].append(time.perf_counter() - started)
        g.stop(name, system=system)
        started = time.perf_counter()
        sdk = _Sdk(loop, binary, env, sdk_dir)
        sdk.turn()
        cold["sdk"].append(time.perf_counter() - started)
        sdk.close()
        started = time.perf_counter()
        bare = _Bare(binary, env, bare_dir)
        bare.turn()
        cold["bare"].append(time.perf_counter() - started)
        bare.close()
    stats = {name: summarize(values) for name, values in cold.items()}
    result.details["claude_cold_start"] = stats
    result.add(
        Figure(
            key="claude_cold_start",
            label=(
                f"{_prompt_label('sdk')} claude cold start to the first answer, start_agent + "
                "ask vs SDK connect + query"
            ),
            unit="ms",
            value=stats["framework"]["p50_ms"],
            floor=stats["sdk"]["p50_ms"],
            floor_label="claude-agent-sdk connect + first query",
            samples=len(cold["framework"]),
        )
    )


def _fleet_figures(
    result: Result,
    sizes: dict[str, int],
    system: Any,
    binary: str,
    env: dict[str, str],
    loop: _Loop,
    prompt: str,
) -> None:
    """The fleet of ``sizes["fleet"]`` agents, which keeps the machine's cores busy."""
    agents, turns, rounds = sizes["fleet"], sizes["fleet_turns"], sizes["fleet_rounds"]
    runs = _fleet_runs(system, binary, env, loop, prompt, agents, turns, rounds)
    framework, sdk = _median_run(runs["framework"]), _median_run(runs["sdk"])
    framework["framework_pss_per_agent_mib"] = statistics.median(
        run["framework_pss_per_agent_mib"] for run in runs["framework"]
    )
    suffix = _suffix(prompt)
    result.details[f"claude_fleet{suffix}"] = {
        "agents": agents,
        "turns": turns,
        "framework": framework,
        "sdk": sdk,
        "runs": runs,
        "note": (
            "this process's own CPU is counted on both sides (the sampler thread that reads "
            "the PSS of every process is not); each figure is the median of the runs"
        ),
    }
    for key, label, unit in (
        ("wall_s", "wall time", "s"),
        ("cpu_s", "CPU seconds (every process involved)", "s"),
        ("peak_pss_mib", "peak PSS (every process involved)", "MiB"),
    ):
        target = {"wall_s": 1.0, "cpu_s": 1.1}.get(key)
        result.add(
            Figure(
                key=f"claude_fleet_{key}{suffix}",
                label=(
                    f"{_prompt_label(prompt)} {agents} claude agents x {turns} turns, {label}, "
                    f"vs {agents} SDK clients"
                ),
                unit=unit,
                value=framework[key],
                floor=sdk[key],
                floor_label=f"{agents} ClaudeSDKClient on asyncio",
                samples=agents * turns * rounds,
                target=f"<= {target}x" if target else "",
                target_ratio=target,
            )
        )
    result.add(
        Figure(
            key=f"claude_fleet_framework_pss_per_agent{suffix}",
            label=(
                f"{_prompt_label(prompt)} framework PSS per live claude agent in the fleet of "
                f"{agents} (CLI excluded)"
            ),
            unit="MiB",
            value=framework["framework_pss_per_agent_mib"],
            floor=result.details["claude_pss_mib"]["raw_thespian_parent_and_child"],
            floor_label="a raw Thespian actor and its child actor (two processes), alone",
            samples=agents,
            target="<= 20 MiB",
            target_max=20.0,
        )
    )


def _small_fleet_figures(
    result: Result,
    sizes: dict[str, int],
    system: Any,
    binary: str,
    env: dict[str, str],
    loop: _Loop,
) -> None:
    """A fleet too small to fill the machine's cores, beside the big one: whether the
    framework's cost in the big fleet is its own or the amplification of a saturated machine
    (docs/performance.md). No target: the issue's targets are set on the big fleet."""
    agents, turns, rounds = sizes["small_fleet"], sizes["small_fleet_turns"], sizes["small_rounds"]
    runs = _fleet_runs(system, binary, env, loop, "sdk", agents, turns, rounds)
    framework, sdk = _median_run(runs["framework"]), _median_run(runs["sdk"])
    result.details["claude_small_fleet"] = {
        "agents": agents,
        "turns": turns,
        "framework": framework,
        "sdk": sdk,
        "runs": runs,
    }
    for key, label in (("wall_s", "wall time"), ("cpu_s", "CPU seconds (every process involved)")):
        result.add(
            Figure(
                key=f"claude_small_fleet_{key}",
                label=(
                    f"{_prompt_label('sdk')} {agents} claude agents x {turns} turns (cores to "
                    f"spare), {label}, vs {agents} SDK clients"
                ),
                unit="s",
                value=framework[key],
                floor=sdk[key],
                floor_label=f"{agents} ClaudeSDKClient on asyncio",
                samples=agents * turns * rounds,
            )
        )


def _fleet_runs(
    system: Any,
    binary: str,
    env: dict[str, str],
    loop: _Loop,
    prompt: str,
    agents: int,
    turns: int,
    rounds: int,
) -> dict[str, list[dict[str, Any]]]:
    """Both fleets measured warm (every agent or client has answered once before the clock),
    in alternating runs (framework, SDK, SDK, framework...); each figure is then the median
    run of each side."""
    runs: dict[str, list[dict[str, Any]]] = {"framework": [], "sdk": []}
    with _workdirs(agents * 2) as dirs:
        fleets = {
            "framework": lambda: _framework_fleet(
                system, binary, env, dirs[:agents], turns, prompt
            ),
            "sdk": lambda: _sdk_fleet(loop, binary, env, dirs[agents:], turns, prompt),
        }
        for index in range(rounds):
            order = ("framework", "sdk") if index % 2 == 0 else ("sdk", "framework")
            for contender in order:
                runs[contender].append(fleets[contender]())
    return runs


def _framework_fleet(
    system: Any, binary: str, env: dict[str, str], dirs: list[Path], turns: int, prompt: str
) -> dict[str, Any]:
    names = [f"fleet{i}" for i in range(len(dirs))]
    for name, workdir in zip(names, dirs, strict=True):
        _start_claude_agent(system, name, binary, env, workdir, prompt)
    try:
        _each(names, lambda name: g.ask(name, PROMPT, system=system))
        run = _fleet_run(
            lambda: _each(
                names, lambda name: [g.ask(name, PROMPT, system=system) for _ in range(turns)]
            ),
            lambda: _system_trees(system),
        )
        # Agents and workers are the Python processes of each agent's tree (the CLIs are not).
        own = [
            p
            for name in names
            for p in _tree(g.status(name, system=system).pid)
            if p.name().startswith("python")
        ]
        run["framework_pss_per_agent_mib"] = _pss_mib(own) / len(names)
        return run
    finally:
        for name in names:
            g.stop(name, system=system)


def _sdk_fleet(
    loop: _Loop, binary: str, env: dict[str, str], dirs: list[Path], turns: int, prompt: str
) -> dict[str, Any]:
    clients = [_Sdk(loop, binary, env, workdir, prompt) for workdir in dirs]

    async def all_turns(count: int) -> None:
        async def one(client: _Sdk) -> None:
            for _ in range(count):
                await client.aturn()

        await asyncio.gather(*(one(c) for c in clients))

    try:
        loop.run(all_turns(1), timeout=900)
        return _fleet_run(
            lambda: loop.run(all_turns(turns), timeout=900),
            lambda: [p for c in clients if (pid := c.cli_pid()) for p in _tree(pid)],
        )
    finally:
        for client in clients:
            client.close()


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the runs (of an even count, the mean of the middle two)."""
    keys = ("wall_s", "cpu_s", "peak_pss_mib")
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def _each(names: list[str], work: Callable[[str], Any]) -> None:
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        list(pool.map(work, names))


def _system_trees(system: Any) -> list[Any]:
    """Every process of the actor system (admin, registry, agents, workers) and the CLIs."""
    from ._common import live_system_processes

    seen: dict[int, Any] = {}
    for pid in live_system_processes(system):
        for process in _tree(pid):
            seen.setdefault(process.pid, process)
    return list(seen.values())


def _fleet_run(work: Callable[[], Any], processes_of: Callable[[], list[Any]]) -> dict[str, Any]:
    """Run ``work``; its wall time, the CPU seconds of this process and of ``processes_of()``
    (sampled through the run, so processes that come and go are counted), and peak PSS.

    The sampler thread's own CPU (reading ``smaps`` of every process, more for the
    framework's many processes) is not counted: it is the measurement, not the contender.
    ``cpu_by_kind`` splits the CPU between this process, Python processes (the framework's
    actors) and the others (the CLIs).
    """
    import psutil

    me = psutil.Process()
    tracked = {p.pid: p for p in processes_of()}
    before = {pid: _cpu_s([p]) for pid, p in tracked.items()}
    own_before = _cpu_s([me])
    peak = 0.0
    sampler_cpu = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, sampler_cpu
        while not stop.is_set():
            current = processes_of()
            for process in current:
                tracked.setdefault(process.pid, process)
            peak = max(peak, _pss_mib([me, *current]))
            stop.wait(0.5)
        sampler_cpu = time.thread_time()

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    work()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join(5)
    by_kind = {"this process": _cpu_s([me]) - own_before - sampler_cpu, "python": 0.0, "cli": 0.0}
    for pid, process in tracked.items():
        with contextlib.suppress(psutil.Error):
            kind = "python" if process.name().startswith("python") else "cli"
            by_kind[kind] += _cpu_s([process]) - before.get(pid, 0.0)
    return {
        "wall_s": wall,
        "cpu_s": sum(by_kind.values()),
        "peak_pss_mib": peak,
        "cpu_by_kind": by_kind,
        "sampler_cpu_s": sampler_cpu,
    }


# ============================================================================ codex


def _codex(result: Result, sizes: dict[str, int], binary: str, server: FakeLLMServer) -> None:
    home = Path(tempfile.mkdtemp(prefix="genagent-bench-codex-"))
    (home / ".codex").mkdir()
    provider = {
        "name": "fake",
        "base_url": server.openai_base_url,
        "env_key": "GENAGENT_BENCH_CODEX_KEY",
        "supports_websockets": False,
        "request_max_retries": 0,
        "stream_max_retries": 0,
    }
    env = {
        "HOME": str(home),
        "CODEX_HOME": str(home / ".codex"),
        "GENAGENT_BENCH_CODEX_KEY": KEY,
        "NO_COLOR": "1",
    }
    config = {
        "check_for_update_on_startup": False,
        "analytics.enabled": False,
        "feedback.enabled": False,
        "features.plugins": False,
        "features.apps": False,
    }
    try:
        with agent_system() as system, _workdirs(2) as dirs:
            for mode, workdir in zip(("app_server", "exec"), dirs, strict=True):
                g.start_agent(
                    BenchAgent,
                    name=mode,
                    backend="codex",
                    system=system,
                    mode=mode,
                    binary=binary,
                    cwd=str(workdir),
                    env=env,
                    model="gpt-5.5",
                    sandbox="read-only",
                    provider=provider,
                    config=config,
                )
            rounds = max(2, sizes["rounds"] // 2)
            samples = interleaved(
                {
                    "app_server": lambda: g.ask("app_server", PROMPT, system=system),
                    "exec": lambda: g.ask("exec", PROMPT, system=system),
                },
                rounds=rounds,
                per_round=sizes["per_round"],
                warmup=sizes["warmup"],
            )
            for name in ("app_server", "exec"):
                g.stop(name, system=system)
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)
    stats = {name: summarize(values) for name, values in samples.items()}
    result.details["codex_turn"] = stats
    for percentile in ("p50", "p99"):
        result.add(
            Figure(
                key=f"codex_turn_{percentile}",
                label=f"codex turn {percentile} through start_agent, app_server vs exec mode",
                unit="ms",
                value=stats["app_server"][f"{percentile}_ms"],
                floor=stats["exec"][f"{percentile}_ms"],
                floor_label="the codex backend's exec mode (one process per turn)",
                samples=len(samples["app_server"]),
            )
        )
    try:
        import openai_codex  # noqa: F401
    except ImportError:
        result.notes.append(
            "codex: the openai-codex Python SDK is not installed here; not compared"
        )


# ============================================================================ entry


def run(*, quick: bool = False) -> Result:
    """Run the benchmark (``quick``: a few samples, 3 agents x 2 turns)."""
    result = Result("cli_turns")
    sizes = _sizes(quick)
    claude, codex = _binary("claude"), _binary("codex")
    with FakeLLMServer(default=Text(ANSWER)) as server:
        if claude is None:
            result.notes.append("claude is not installed (.ci/tools): claude figures skipped")
        else:
            _claude(result, sizes, claude, server)
        if codex is None:
            result.notes.append("codex is not installed (.ci/tools): codex figures skipped")
        else:
            _codex(result, sizes, codex, server)
    return result


if __name__ == "__main__":  # pragma: no cover - run through bench/run.py
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.run import main

    sys.exit(main(["--only", "cli_turns", *sys.argv[1:]]))
