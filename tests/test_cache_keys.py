"""gateway/cache/keys.py on its own: what a cached answer is filed under (test_cache.py shows
the same through a gateway). In the test process, for the mutation run."""

from __future__ import annotations

from typing import Any

from gateway.cache.keys import cache_keys, question_text

Q = {"role": "user", "content": "What is 2+2?"}


def keys(body: dict[str, Any], tenant: str = "key:a", provider: str = "p", model: str = "m"):
    return cache_keys(tenant, provider, model, body)


def test_the_question_is_the_last_user_text() -> None:
    assert question_text(Q) == "What is 2+2?"
    parts = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]}
    assert question_text(parts) == "a\n"
    image = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}
    for message in (image, {"role": "assistant", "content": "x"}, "x", {"role": "user"},
                    {"role": "user", "content": 5}, {"role": "user", "content": ["a"]}):  # fmt: skip
        assert question_text(message) is None, message


def test_exact_and_context_keys() -> None:
    history = [{"role": "system", "content": "be brief"}]
    first = keys({"messages": [*history, Q], "temperature": 0})
    assert first.tenant == "key:a" and first.question == "What is 2+2?"
    assert len(first.exact) == 32 and len(first.context) == 32 and first.exact != first.context
    # Fields that never change the answer are not in either key.
    same = keys({"messages": [*history, Q], "temperature": 0, "stream": True, "model": "x",
                 "stream_options": {}, "user": "u", "metadata": {"a": 1}, "store": True})  # fmt: skip
    assert same == first
    # Anything else is in both; the target and the tenant too.
    for other in (
        keys({"messages": [*history, Q], "temperature": 1}),
        keys({"messages": [*history, Q], "temperature": 0}, tenant="key:b"),
        keys({"messages": [*history, Q], "temperature": 0}, provider="q"),
        keys({"messages": [*history, Q], "temperature": 0}, model="n"),
    ):
        assert other.exact != first.exact and other.context != first.context
    # Another last question: another exact key, the same context.
    paraphrase = keys({"messages": [*history, Q | {"content": "2+2 is?"}], "temperature": 0})
    assert paraphrase.exact != first.exact and paraphrase.context == first.context
    # Another history: another context.
    longer = keys({"messages": [*history, Q, Q], "temperature": 0})
    assert longer.context != first.context
    earlier = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert (
        keys({"messages": [*history, earlier[0], Q]}).context
        != keys({"messages": [*history, earlier[1], Q]}).context
    )  # every earlier turn is in the context
    # Key order does not matter (sorted JSON, as every replica computes it).
    assert keys({"temperature": 0, "messages": [*history, Q]}) == first


def test_no_question_no_context_key() -> None:
    for body in ({"messages": [{"role": "assistant", "content": "x"}]},
                 {"messages": [{"role": "user", "content": "  "}]}, {"messages": []},
                 {"prompt": "x"}, {"messages": "x"}):  # fmt: skip
        found = keys(body)
        assert (found.context, found.question) == ("", "") and len(found.exact) == 32, body
        assert found.tenant == "key:a"
    assert keys({"prompt": "x"}).exact != keys({"prompt": "y"}).exact
    assert keys({1: "a"}).exact  # non-string keys do not break the digest
