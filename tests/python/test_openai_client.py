"""The official `openai` Python client against a running glimprouter server.

Environment:
  GLIMP_BASE_URL  server's /v1 URL (default http://127.0.0.1:8000/v1)
  GLIMP_API_KEY   API key, if the server has tenants (default "none")
  GLIMP_MODEL     model name (default: the first of GET /v1/models)

Run with pytest (`pytest tests/python`) or directly (`python3 tests/python/test_openai_client.py`).
"""

import os
import sys
import uuid

import openai

BASE_URL = os.environ.get("GLIMP_BASE_URL", "http://127.0.0.1:8000/v1")
API_KEY = os.environ.get("GLIMP_API_KEY", "none")


def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=120)


def model_name():
    if "GLIMP_MODEL" in os.environ:
        return os.environ["GLIMP_MODEL"]
    return client().models.list().data[0].id


def check_routing(routing, completion_tokens):
    assert routing is not None, "the response carries no routing object"
    assert routing["steps"] >= 0 and 0 <= routing["llm_steps"] <= routing["steps"]
    assert 0.0 <= routing["llm_step_ratio"] <= 1.0
    by_model = routing["tokens_by_model"]
    assert by_model["slm"] + by_model["llm"] >= completion_tokens, routing


def test_models_list():
    models = client().models.list()
    assert len(models.data) >= 1
    assert models.data[0].object == "model"


def test_completion():
    request_id = uuid.uuid4().hex
    resp = client().completions.create(
        model=model_name(),
        prompt="Problem: start at 5, add 6.",
        max_tokens=8,
        temperature=0,
        extra_headers={"X-Request-Id": request_id},
        extra_body={"ignore_eos": True},
    )
    assert resp.id == f"cmpl-{request_id}"
    assert resp.object == "text_completion"
    assert isinstance(resp.choices[0].text, str)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 8
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 8
    check_routing(resp.to_dict()["routing"], 8)


def test_completion_n_and_stop():
    resp = client().completions.create(
        model=model_name(), prompt="Count:", max_tokens=6, n=2, stop=["\n\n\n"], seed=1
    )
    assert sorted(c.index for c in resp.choices) == [0, 1]
    assert all(c.finish_reason in ("stop", "length") for c in resp.choices)


def test_chat():
    resp = client().chat.completions.create(
        model=model_name(),
        messages=[
            {"role": "system", "content": "You solve arithmetic."},
            {"role": "user", "content": "What is 2 plus 3?"},
        ],
        max_tokens=10,
        temperature=0,
        extra_body={"routing": {"policy": "slm"}},
    )
    assert resp.object == "chat.completion"
    message = resp.choices[0].message
    assert message.role == "assistant" and isinstance(message.content, str)
    assert resp.usage.completion_tokens <= 10
    routing = resp.to_dict()["routing"]
    check_routing(routing, resp.usage.completion_tokens)
    assert routing["policy"] == "slm" and routing["llm_steps"] == 0


def test_chat_stream_with_usage():
    stream = client().chat.completions.create(
        model=model_name(),
        messages=[{"role": "user", "content": "Add 1 and 1."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    content, finish, usage, routing = "", None, None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
            routing = chunk.to_dict().get("routing")
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 12
    check_routing(routing, 12)


def test_completion_stream():
    stream = client().completions.create(
        model=model_name(), prompt="Problem: 7 minus 2.", max_tokens=5, stream=True,
        extra_body={"ignore_eos": True},
    )
    text, finish = "", None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.text
            finish = choice.finish_reason or finish
    assert finish == "length"


def test_errors():
    try:
        client().completions.create(model="no-such-model", prompt="x", max_tokens=1)
        raise AssertionError("an unknown model must fail")
    except openai.NotFoundError as e:
        assert e.status_code == 404
        assert "does not exist" in str(e)
    try:
        client().completions.create(model=model_name(), prompt="x", max_tokens=0)
        raise AssertionError("max_tokens=0 must fail")
    except openai.BadRequestError as e:
        assert e.status_code == 400


if __name__ == "__main__":
    tests = [(name, fn) for name, fn in sorted(globals().items()) if name.startswith("test_") and callable(fn)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok {name}")
        except Exception as e:  # report every failure, then exit non-zero
            failed += 1
            print(f"FAILED {name}: {e!r}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
