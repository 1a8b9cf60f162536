"""The backend conformance suite, run for the anthropic and openai backends."""

from __future__ import annotations

from typing import Any

from genagent_thespian.backends.anthropic import AnthropicBackend
from genagent_thespian.backends.openai import OpenAIBackend

from genagent_thespian.testing import FakeLLMServer
from genagent_thespian.testing._conformance import FakeServerConformance


class TestAnthropicConformance(FakeServerConformance):
    def make_backend(self) -> AnthropicBackend:
        return AnthropicBackend()

    def start_options(self, provider: FakeLLMServer) -> dict[str, Any]:
        return {"api_key": "sk-ant-conformance", "base_url": provider.url, "model": "claude-x"}

    def assert_continues(
        self, provider: FakeLLMServer, first_prompt: str, first_answer: str
    ) -> None:
        first, second = provider.model_requests[-2:]
        assert first.body["messages"] == [{"role": "user", "content": first_prompt}]
        assert second.body["messages"][:2] == [
            {"role": "user", "content": first_prompt},
            {"role": "assistant", "content": [{"type": "text", "text": first_answer}]},
        ]


class TestOpenAIConformance(FakeServerConformance):
    def make_backend(self) -> OpenAIBackend:
        return OpenAIBackend()

    def start_options(self, provider: FakeLLMServer) -> dict[str, Any]:
        return {"api_key": "sk-conformance", "base_url": provider.openai_base_url, "model": "g"}

    def assert_continues(
        self, provider: FakeLLMServer, first_prompt: str, first_answer: str
    ) -> None:
        first, second = provider.model_requests[-2:]
        assert first.body["input"] == [{"role": "user", "content": first_prompt}]
        assert "previous_response_id" not in first.body
        assert second.body["previous_response_id"].startswith("resp_")
