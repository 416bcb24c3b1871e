"""The official `openai` package against a running Metal Marlin server (tests/openai_sdk.rs
starts the server and this script): chat, streaming chat, completions, models, errors."""

import os

import openai
from openai import OpenAI

BASE = os.environ["MARLIN_BASE_URL"]
MODEL = os.environ["MARLIN_MODEL"]
KEY = os.environ["MARLIN_API_KEY"]
client = OpenAI(base_url=BASE, api_key=KEY, max_retries=0)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

# Models.
assert [m.id for m in client.models.list()] == [MODEL]

# Chat.
r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, temperature=0)
answer = r.choices[0].message.content
assert answer and "Paris" in answer, answer
assert r.choices[0].finish_reason in ("stop", "length")
assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8, r.usage
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

# Streaming chat with usage.
text, usage, finish = "", None, None
for chunk in client.chat.completions.create(
    model=MODEL, messages=QUESTION, max_tokens=8, temperature=0, stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
assert text == answer, (text, answer)
assert usage.completion_tokens == r.usage.completion_tokens and finish == r.choices[0].finish_reason

# Log-probabilities, seeds, stop strings and the extra sampling fields.
r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3, temperature=0,
                                   logprobs=True, top_logprobs=2)
content = r.choices[0].logprobs.content
assert len(content) == 3 and len(content[0].top_logprobs) == 2, content
seeded = dict(model=MODEL, messages=QUESTION, max_tokens=6, temperature=1.0, top_p=0.9, seed=7,
              presence_penalty=0.3, frequency_penalty=0.3,
              extra_body={"top_k": 40, "min_p": 0.02, "repetition_penalty": 1.1})
a = client.chat.completions.create(**seeded).choices[0].message.content
b = client.chat.completions.create(**seeded).choices[0].message.content
assert a == b, (a, b)

# Completions: a string, a list, streamed, with a stop string.
c = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                              temperature=0, stop=["."])
assert c.choices[0].text == " Paris" and c.choices[0].finish_reason == "stop", c
c = client.completions.create(model=MODEL, prompt=["Once upon a time", "1, 2, 3,"], max_tokens=3,
                              temperature=0)
assert [x.index for x in c.choices] == [0, 1] and c.usage.completion_tokens <= 6, c
pieces = [ch.choices[0].text for ch in client.completions.create(
    model=MODEL, prompt="The capital of France is", max_tokens=3, temperature=0, stream=True)
    if ch.choices]
assert "".join(pieces).startswith(" Paris"), pieces


def fails(exc, **kw):
    args = dict(model=MODEL, messages=QUESTION, max_tokens=2)
    args.update(kw)
    try:
        client.chat.completions.create(**args)
    except exc as e:
        assert e.body and e.body.get("message"), e.body
        return e
    raise AssertionError(f"{kw} did not raise {exc.__name__}")


fails(openai.NotFoundError, model="no-such-model")
assert fails(openai.BadRequestError, temperature=5).body["param"] == "temperature"
fails(openai.BadRequestError, n=2)
fails(openai.BadRequestError, messages=[])
fails(openai.BadRequestError, max_tokens=100_000)
try:
    OpenAI(base_url=BASE, api_key="wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError:
    pass

print("openai SDK: all checks passed")
