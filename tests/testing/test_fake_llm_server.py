"""FakeLLMServer, driven by the official anthropic and openai SDKs and by raw sockets."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message, MessageParam, TextBlock, ThinkingBlock, ToolUseBlock
from openai.types.responses import ResponseFunctionToolCall

from genagent_thespian.testing._fake_llm_server import (
    REDACTED,
    FakeLLMServer,
    Hang,
    HTTPError,
    Raw,
    RecordedRequest,
    Reply,
    StreamError,
    Text,
    Thinking,
    ToolUse,
    Truncated,
    When,
)

USER: list[MessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


_CLIENTS: list[anthropic.Anthropic | openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def claude(
    server: FakeLLMServer, key: str = "sk-ant-test", retries: int = 0
) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=retries, timeout=10)
    _CLIENTS.append(client)
    return client


def gpt(server: FakeLLMServer, key: str = "sk-openai-test") -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key=key, max_retries=0, timeout=10)
    _CLIENTS.append(client)
    return client


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        threading.Event().wait(0.01)


def text_of(message: Message) -> str:
    """The text of a message's first block (which must be a text block)."""
    block = message.content[0]
    assert isinstance(block, TextBlock)
    return block.text


def body_of(error: anthropic.APIStatusError | openai.APIStatusError) -> dict[str, Any]:
    """The JSON body of an SDK error (typed ``object`` by the SDKs)."""
    assert isinstance(error.body, dict)
    return error.body


# ---------------------------------------------------------------------------- anthropic


def test_anthropic_stream_carries_every_block_kind(server: FakeLLMServer) -> None:
    server.script(
        Reply(
            [
                Thinking("let me see", chunks=2),
                Text("Hello there", chunks=["Hel", "lo", " there"]),
                ToolUse("get_weather", {"city": "Paris"}, id="toolu_1", chunks=3),
            ],
            usage={"input_tokens": 30, "output_tokens": 9, "cache_read_input_tokens": 4},
        )
    )
    client = claude(server)
    with client.messages.stream(model="claude-x", max_tokens=50, messages=USER) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds.count("text") == 3
    assert kinds.count("thinking") == 2
    assert "input_json" in kinds
    assert kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    thinking, text, tool_use = final.content
    assert isinstance(thinking, ThinkingBlock) and thinking.signature == "fake-signature"
    assert isinstance(text, TextBlock) and text.text == "Hello there"
    assert isinstance(tool_use, ToolUseBlock)
    assert (tool_use.input, tool_use.id) == ({"city": "Paris"}, "toolu_1")
    assert final.stop_reason == "tool_use"
    assert final.model == "claude-x"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 9)
    assert final.usage.cache_read_input_tokens == 4


def test_anthropic_raw_sse_has_event_lines_and_ping(server: FakeLLMServer) -> None:
    server.script(Text("ok"))
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    body = json.dumps({"model": "m", "max_tokens": 5, "messages": USER, "stream": True})
    connection.request("POST", "/v1/messages?beta=true", body, {"content-type": "application/json"})
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    assert response.status == 200
    assert (response.getheader("content-type") or "").startswith("text/event-stream")
    assert (response.getheader("request-id") or "").startswith("req_fake")
    names = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    (request,) = server.requests
    assert request.query == {"beta": "true"}
    assert request.kind == "messages"
    assert not request.has_auth


def test_anthropic_non_streaming_message(server: FakeLLMServer) -> None:
    server.script("plain answer")
    message = claude(server).messages.create(model="m", max_tokens=5, messages=USER)
    assert text_of(message) == "plain answer"
    assert message.stop_reason == "end_turn"
    (request,) = server.requests
    assert request.stream is False
    assert request.body["messages"] == USER


@pytest.mark.parametrize(
    ("status", "exc_type", "error_type"),
    [
        (401, anthropic.AuthenticationError, "authentication_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.InternalServerError, "overloaded_error"),
    ],
)
def test_anthropic_http_errors_have_the_provider_shape(
    server: FakeLLMServer, status: int, exc_type: type[anthropic.APIStatusError], error_type: str
) -> None:
    server.script(HTTPError(status, retry_after=2 if status == 429 else None))
    with pytest.raises(exc_type) as caught:
        claude(server).messages.create(model="m", max_tokens=5, messages=USER)
    assert caught.value.status_code == status
    assert body_of(caught.value)["error"]["type"] == error_type
    assert (caught.value.request_id or "").startswith("req_fake")
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "2"


def test_anthropic_error_in_the_middle_of_a_200_stream(server: FakeLLMServer) -> None:
    server.script(StreamError(Text("Hello from", chunks=2), error_type="overloaded_error"))
    seen: list[str] = []
    client = claude(server)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="m", max_tokens=5, messages=USER) as stream,
    ):
        seen.extend(stream.text_stream)
    assert seen == ["Hello", " from"]
    assert caught.value.status_code == 200
    assert body_of(caught.value)["error"]["type"] == "overloaded_error"


def test_sdk_retry_after_is_honoured_then_reply_served(server: FakeLLMServer) -> None:
    server.script(HTTPError(429, retry_after=0), "after retry")
    client = claude(server, retries=1)
    message = client.messages.create(model="m", max_tokens=5, messages=USER)
    assert text_of(message) == "after retry"
    first, second = server.wait_for_requests(2)
    assert first.status == 429
    assert second.headers["x-stainless-retry-count"] == "1"


def test_credentials_are_redacted_but_fingerprinted(server: FakeLLMServer) -> None:
    server.script("a", "b")
    claude(server, key="sk-ant-secret-1").messages.create(model="m", max_tokens=5, messages=USER)
    gpt(server, key="sk-openai-secret-2").responses.create(model="g", input="hi")
    anthropic_request, openai_request = server.wait_for_requests(2)
    for request in (anthropic_request, openai_request):
        assert "secret" not in json.dumps(request.headers)
        assert "secret" not in repr(request)
    assert REDACTED in (
        anthropic_request.headers.get("x-api-key"),
        anthropic_request.headers.get("authorization"),
    )
    assert openai_request.headers["authorization"] == REDACTED
    assert anthropic_request.auth_fingerprint == FakeLLMServer.fingerprint("sk-ant-secret-1")
    assert openai_request.auth_fingerprint == FakeLLMServer.fingerprint("sk-openai-secret-2")


# ------------------------------------------------------------------------------- openai


def test_openai_stream_text_reasoning_and_function_call(server: FakeLLMServer) -> None:
    server.script(
        Reply(
            [
                Thinking("plan", chunks=2),
                Text("Hello there", chunks=3),
                ToolUse("lookup", {"q": 1}, id="call_7"),
            ],
            usage={"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 4},
        )
    )
    with gpt(server).responses.stream(model="gpt-x", input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    assert kinds.count("response.reasoning_summary_text.delta") == 2
    assert final.output_text == "Hello there"
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    call = final.output[2]
    assert isinstance(call, ResponseFunctionToolCall)
    assert (call.name, json.loads(call.arguments), call.call_id) == ("lookup", {"q": 1}, "call_7")
    assert final.usage is not None
    assert final.usage.input_tokens == 15
    assert final.usage.input_tokens_details.cached_tokens == 5
    assert final.usage.output_tokens == 4


def test_openai_previous_response_id_is_checked(server: FakeLLMServer) -> None:
    server.script("one", "two", "three")
    client = gpt(server)
    first = client.responses.create(model="g", input="a")
    second = client.responses.create(model="g", input="b", previous_response_id=first.id)
    assert second.output_text == "two"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="g", input="c", previous_response_id="resp_unknown")
    assert body_of(caught.value)["code"] == "previous_response_not_found"
    assert server.requests[1].body["previous_response_id"] == first.id
    assert server.remaining == 1  # the refused request took no item


def test_openai_http_error_and_stream_failure(server: FakeLLMServer) -> None:
    server.script(
        HTTPError(429, retry_after=3),
        StreamError(Text("par", chunks=1), error_type="overloaded_error"),
        StreamError("x", openai_event="error", code="server_error", message="boom"),
    )
    client = gpt(server)
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="g", input="a")
    assert body_of(caught.value)["code"] == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.response.headers["x-request-id"].startswith("req_fake")
    events = list(client.responses.create(model="g", input="a", stream=True))
    assert events[-1].type == "response.failed"
    failed = events[-1].response.error
    assert failed is not None and str(failed.code) == "server_is_overloaded"
    events = list(client.responses.create(model="g", input="a", stream=True))
    assert events[-1].type == "error"
    assert (events[-1].code, events[-1].message) == ("server_error", "boom")


# ---------------------------------------------------------------------------- scripting


def test_default_reply_is_an_explicit_non_retryable_error(server: FakeLLMServer) -> None:
    client = claude(server, retries=2)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=USER)
    assert "no scripted reply" in body_of(caught.value)["error"]["message"]
    assert len(server.requests) == 1


def test_configurable_default_reply() -> None:
    with FakeLLMServer(default=Text("always")) as server:
        client = claude(server)
        for _ in range(2):
            message = client.messages.create(model="m", max_tokens=5, messages=USER)
            assert text_of(message) == "always"


def test_callable_and_when_items(server: FakeLLMServer) -> None:
    def echo(request: RecordedRequest) -> Text:
        return Text(f"you said {request.body['messages'][-1]['content']}")

    server.script(When(lambda r: r.model == "special", "special reply"), echo)
    client = claude(server)
    first = client.messages.create(model="m", max_tokens=5, messages=USER)
    assert text_of(first) == "you said hi"
    second = client.messages.create(model="special", max_tokens=5, messages=USER)
    assert text_of(second) == "special reply"
    assert server.remaining == 0


def test_auxiliary_requests_are_answered_and_recorded_without_taking_items(
    server: FakeLLMServer,
) -> None:
    server.script("kept")
    client = claude(server)
    counted = client.messages.count_tokens(model="m", messages=USER)
    assert counted.input_tokens > 0
    models = gpt(server).models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    connection.request("GET", "/api/hello")
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 404
    assert [r.kind for r in server.requests] == ["count_tokens", "models", "other"]
    assert server.model_requests == []
    assert server.remaining == 1


def test_wait_for_requests_times_out_with_a_clear_error(server: FakeLLMServer) -> None:
    with pytest.raises(TimeoutError, match="got 0"):
        server.wait_for_requests(1, timeout=0.1)


def test_only_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeLLMServer(host="0.0.0.0")


def test_hang_validation() -> None:
    with pytest.raises(ValueError, match="prefix or a then"):
        Hang(prefix="a", then="b")


def test_reply_validation() -> None:
    with pytest.raises(ValueError, match="do not join"):
        Text("abc", chunks=["a", "x"]).fragments()


# ----------------------------------------------------------------- slow, hang, truncation


def test_slow_stream_sees_the_client_disconnect(server: FakeLLMServer) -> None:
    server.script(Reply([Text("x" * 50, chunks=50)], chunk_delay=0.05))
    with claude(server).messages.stream(model="m", max_tokens=5, messages=USER) as stream:
        for event in stream:
            if event.type == "text":
                break
    (request,) = server.wait_for_requests(1)
    assert request.wait_done(5)
    assert request.client_disconnected


def test_hang_until_released_then_serves(server: FakeLLMServer) -> None:
    hang = Hang(then=Text("late"))
    server.script(hang)
    result: dict[str, str] = {}

    def call() -> None:
        message = claude(server).messages.create(model="m", max_tokens=5, messages=USER)
        result["text"] = text_of(message)

    thread = threading.Thread(target=call)
    thread.start()
    (request,) = server.wait_for_requests(1)
    assert not request.done.is_set()
    hang.release()
    thread.join(5)
    assert result == {"text": "late"}


def test_hang_with_prefix_notices_the_client_leaving(server: FakeLLMServer) -> None:
    server.script(Hang(prefix=Text("partial")))
    stream = claude(server).messages.create(model="m", max_tokens=5, messages=USER, stream=True)
    first = next(iter(stream))
    assert first.type == "message_start"
    stream.close()
    (request,) = server.wait_for_requests(1)
    assert request.wait_done(5)
    assert request.client_disconnected


def test_close_releases_a_hang_and_leaves_no_thread() -> None:
    before = threading.active_count()
    server = FakeLLMServer()
    server.script(Hang())
    errors: list[Exception] = []

    def call() -> None:
        try:
            claude(server).messages.create(model="m", max_tokens=5, messages=USER)
        except anthropic.APIConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    server.wait_for_requests(1)
    server.close()
    server.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1
    wait_until(lambda: threading.active_count() <= before)


def test_truncated_stream_breaks_the_connection(server: FakeLLMServer) -> None:
    server.script(Truncated(Text("abcdef", chunks=3), after_events=3))
    received: list[str] = []
    client = claude(server)
    with (
        pytest.raises(Exception, match="incomplete chunked read") as caught,
        client.messages.stream(model="m", max_tokens=5, messages=USER) as stream,
    ):
        received.extend(stream.text_stream)
    # The client sees the transport's own error: older anthropic SDKs raise it as is, newer
    # ones (2.17.0 here) as the cause of an APIConnectionError.
    chain: list[BaseException] = [caught.value]
    while (cause := chain[-1].__cause__) is not None:
        chain.append(cause)
    assert "RemoteProtocolError" in [type(error).__name__ for error in chain]
    assert received == []  # the cut came right after content_block_start


def test_raw_garbage_body(server: FakeLLMServer) -> None:
    server.script(Raw("data: {not json\n\n", content_type="text/event-stream"))
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        body = b'{"stream": true}'
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        data = b""
        while b"{not json" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b"data: {not json" in data
