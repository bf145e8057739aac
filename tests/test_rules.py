"""gateway/rules.py on its own: which rule matches a request, and what config it refuses.

In the test process, in milliseconds (so a mutation run can try every mutant against it);
test_routing.py shows the same decisions through a gateway.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest

from gateway.catalog import ModelCatalog, Target
from gateway.chain.auth import Principal
from gateway.config import ConfigError, RuleConfig, RuleWhen, parse_config
from gateway.context import RequestContext
from gateway.rules import compile_rules, rule_problems

CATALOG = ModelCatalog(
    {"openai": ("gpt-4o", "gpt-4o-mini"), "ollama": ("llama3.2",)},
    {"local": "ollama:llama3.2", "cloud": "openai:gpt-4o"},
    "local",
)
KEY = Principal(name="alice", tier="pro", team="search")


def rule(route: str = "cloud", fallback: tuple[str, ...] = (), **when: Any) -> Any:
    config = RuleConfig(name="r", when=RuleWhen(**when), route=route, fallback=fallback)
    return compile_rules((config,), CATALOG)[0]


def ctx(**fields: Any) -> RequestContext:
    headers = fields.pop("headers", [])
    context = RequestContext("id", "chat", "/chat/completions", headers, 0.0)
    context.requested_model = "auto"
    context.as_auto = True
    for name, value in fields.items():
        setattr(context, name, value)
    return context


def test_compile_resolves_targets_and_lowercases_headers() -> None:
    compiled = rule("cloud", ("local", "nowhere"), headers={"X-Team": "Search"})
    assert compiled.target == Target("openai", "gpt-4o")
    assert compiled.fallback == (Target("ollama", "llama3.2"),)  # unknown names left out
    assert compiled.headers == ((b"x-team", b"search"),)
    blocking = compile_rules((RuleConfig(name="b", block="no"),), CATALOG)[0]
    assert blocking.target is None and blocking.name == "b"


def test_an_empty_when_matches_everything() -> None:
    assert rule().matches(ctx())
    assert rule().matches(ctx(key=None, complexity=None, requested_model="x", as_auto=False))


@pytest.mark.parametrize("field", ["keys", "teams", "tiers"])
def test_key_conditions(field: str) -> None:
    value = {"keys": "alice", "teams": "search", "tiers": "pro"}[field]
    assert rule(**{field: (value,)}).matches(ctx(key=KEY))
    assert rule(**{field: ("other", value)}).matches(ctx(key=KEY))
    assert not rule(**{field: ("other",)}).matches(ctx(key=KEY))
    assert not rule(**{field: (value,)}).matches(ctx(key=None))  # auth off: no key to match


def test_models_match_the_name_asked_for_or_auto() -> None:
    assert rule(models=("auto",)).matches(ctx())
    assert rule(models=("auto",)).matches(ctx(requested_model="unlisted", as_auto=True))
    assert not rule(models=("auto",)).matches(ctx(requested_model="cloud", as_auto=False))
    assert rule(models=("auto", "cloud")).matches(ctx(requested_model="cloud", as_auto=False))


def test_privacy_conditions() -> None:
    clean, pii = ctx(privacy_categories=()), ctx(privacy_categories=("pii", "secret"))
    assert rule(privacy=("none",)).matches(clean) and not rule(privacy=("none",)).matches(pii)
    assert rule(privacy=("any",)).matches(pii) and not rule(privacy=("any",)).matches(clean)
    assert rule(privacy=("secret",)).matches(pii) and not rule(privacy=("keyword",)).matches(pii)
    assert rule(privacy=("keyword", "pii")).matches(pii)
    assert rule(privacy=("none", "pii")).matches(clean) and rule(privacy=("none", "pii")).matches(
        pii
    )


def test_complexity_bounds_are_strict_and_need_a_score() -> None:
    above, below = rule(complexity_above=0.5), rule(complexity_below=0.5)
    assert above.matches(ctx(complexity=0.51)) and not above.matches(ctx(complexity=0.5))
    assert below.matches(ctx(complexity=0.49)) and not below.matches(ctx(complexity=0.5))
    assert not above.matches(ctx(complexity=None)) and not below.matches(ctx(complexity=None))
    band = rule(complexity_above=0.2, complexity_below=0.8)
    assert band.matches(ctx(complexity=0.5)) and not band.matches(ctx(complexity=0.9))
    assert rule(complexity_below=0.5).matches(ctx(complexity=0.0))


def test_tools_and_prompt_size() -> None:
    tools = ctx(needs=frozenset({"tools"}))
    assert rule(tools=True).matches(tools) and not rule(tools=True).matches(ctx())
    assert rule(tools=False).matches(ctx()) and not rule(tools=False).matches(tools)
    big, small = ctx(prompt_tokens_estimate=1000), ctx(prompt_tokens_estimate=10)
    assert rule(prompt_tokens_above=999).matches(big)
    assert not rule(prompt_tokens_above=1000).matches(big)
    assert rule(prompt_tokens_below=11).matches(small)
    assert not rule(prompt_tokens_below=10).matches(small)
    assert rule(prompt_tokens_below=1).matches(ctx(prompt_tokens_estimate=0))


def test_latency_preference() -> None:
    speed = ctx(routing_preferences={"latency_preference": "speed"})
    assert rule(latency_preference=("speed",)).matches(speed)
    assert not rule(latency_preference=("quality",)).matches(speed)
    assert not rule(latency_preference=("speed",)).matches(ctx())
    assert not rule(latency_preference=("speed",)).matches(ctx(routing_preferences={}))


def test_headers_match_case_insensitively_and_all_of_them() -> None:
    two = rule(headers={"X-Team": "Search", "x-env": "prod"})
    both = [(b"x-team", b"SEARCH"), (b"x-env", b"prod")]
    assert two.matches(ctx(headers=both))
    assert not two.matches(ctx(headers=both[:1]))
    assert not two.matches(ctx(headers=[(b"x-team", b"search"), (b"x-env", b"dev")]))
    assert not rule(headers={"x-k": "xxxx"}).matches(ctx())  # absent is no value at all


def test_every_condition_must_hold() -> None:
    strict = rule(keys=("alice",), complexity_above=0.5, tools=True)
    ok = ctx(key=KEY, complexity=0.9, needs=frozenset({"tools"}))
    assert strict.matches(ok)
    for change in ({"key": None}, {"complexity": 0.1}, {"needs": frozenset()}):
        assert not strict.matches(ctx(**{**{"key": KEY, "complexity": 0.9,
                                            "needs": frozenset({"tools"})}, **change}))  # fmt: skip


# ---------------------------------------------------------------------- config checks


def problems(*rules: RuleConfig, categories: tuple[str, ...] = ()) -> list[str]:
    return rule_problems(rules, CATALOG, categories)


def test_a_good_rule_set_has_no_problems() -> None:
    assert problems(
        RuleConfig(name="a", when=RuleWhen(models=("auto", "cloud"), privacy=("pii", "any"),
                   complexity_above=0.0, complexity_below=1.0,
                   latency_preference=("speed", "balanced", "quality")),
                   route="cloud", fallback=("local",)),
        RuleConfig(name="b", when=RuleWhen(privacy=("none", "secret", "keyword", "hr")),
                   block="no"),
        categories=("hr",),
    ) == []  # fmt: skip


def test_rule_problems_name_the_rule_and_say_why() -> None:
    assert problems(RuleConfig(name="", route="cloud")) == [
        "routing.rules[0].name: must not be empty"
    ]
    assert problems(RuleConfig(name="a", route="cloud"), RuleConfig(name="a", route="cloud")) == [
        "routing.rules[1].name: 'a' is already used"
    ]
    for reserved in ("explicit", "force_provider", "privacy", "capability", "default"):
        assert problems(RuleConfig(name=reserved, route="cloud")) == [
            f"routing.rules[0].name: {reserved!r} is already used"
        ]
    action = "routing.rules[0]: give exactly one action, `route` (a model) or `block`"
    assert problems(RuleConfig(name="a")) == [action]
    assert problems(RuleConfig(name="a", route="cloud", block="no")) == [action]
    assert problems(RuleConfig(name="a", route="nowhere", fallback=("local", "gone"))) == [
        "routing.rules[0].route: 'nowhere' is not a configured model",
        "routing.rules[0].fallback[1]: 'gone' is not a configured model",
    ]
    assert problems(RuleConfig(name="a", when=RuleWhen(models=("cloud",)), block="no")) == [
        "routing.rules[0].when.models: rules apply to `auto` requests only (an explicit model "
        "skips them), so this rule would never match; list auto"
    ]
    assert problems(RuleConfig(name="a", when=RuleWhen(privacy=("PII",)), block="no")) == [
        "routing.rules[0].when.privacy: unknown category 'PII' (known: secret, pii, keyword, "
        "any, none)"
    ]
    assert problems(
        RuleConfig(name="a", when=RuleWhen(latency_preference=("fast",)), block="no")
    ) == [
        "routing.rules[0].when.latency_preference: unknown value 'fast' (allowed: speed, "
        "balanced, quality)"
    ]
    for bound in ("complexity_above", "complexity_below"):
        for value in (-0.1, 1.5):
            when = RuleWhen(**{bound: value})
            assert problems(RuleConfig(name="a", when=when, block="no")) == [
                f"routing.rules[0].when.{bound}: must be between 0 and 1, got {value}"
            ]


def fallback_errors(routing: str, privacy: str = "") -> list[str]:
    text = f"""
    providers:
      openai: {{type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: [gpt-4o]}}
      ollama: {{type: ollama, base_url: "http://127.0.0.1:9", models: [llama3.2, qwen]}}
    aliases: {{local: "ollama:llama3.2"}}
    routing:
      default_model: local
      {routing}
    privacy:
      {privacy}
    """
    try:
        parse_config(textwrap.dedent(text), env={})
    except ConfigError as exc:
        return [re.sub(r" \(line \d+\)$", "", e) for e in exc.errors]
    return []


def test_fallback_problems() -> None:
    assert fallback_errors("fallbacks: {local: [qwen, gpt-4o]}") == []
    assert fallback_errors("fallbacks: {nowhere: [qwen, gone]}") == [
        "routing.fallbacks.nowhere: 'nowhere' is not a configured model",
        "routing.fallbacks.nowhere[1]: 'gone' is not a configured model",
    ]
    keep_local = "actions: {pii: route_local, secret: block, keyword: block}"
    keep_local += "\n      local_model: local"  # the template's indent
    assert fallback_errors("fallbacks: {local: [qwen, gpt-4o]}", keep_local) == [
        "routing.fallbacks.local (privacy.local_model): gpt-4o would take a request the "
        "privacy scan keeps local to a cloud provider; list local models only"
    ]
    rules = (
        "rules: [{name: p, when: {privacy: [none, pii]}, route: local, fallback: [qwen, gpt-4o]}]"
    )
    assert fallback_errors(rules, keep_local) == [
        "routing.rules[0].fallback (rule 'p' matches pii): gpt-4o would take a request the "
        "privacy scan keeps local to a cloud provider; list local models only"
    ]
    anything = "rules: [{name: p, when: {privacy: [any]}, route: local, fallback: [gpt-4o]}]"
    assert len(fallback_errors(anything, keep_local)) == 1
    assert fallback_errors(rules.replace("pii", "secret"), keep_local) == []  # secret: block
    # `any` includes what is kept local, whatever the default action says
    allow_rest = "actions: {pii: route_local, secret: block, keyword: block, default: allow}"
    assert len(fallback_errors(anything, allow_rest)) == 1
    both = (
        "rules: [{name: p, when: {privacy: [pii, keyword]}, route: local, "
        'fallback: [gpt-4o, "openai:gpt-4o-mini"]}]'
    )
    assert fallback_errors(both, "actions: {pii: route_local, keyword: route_local}") == [
        "routing.rules[0].fallback (rule 'p' matches pii, keyword): gpt-4o, openai:gpt-4o-mini "
        "would take a request the privacy scan keeps local to a cloud provider; list local "
        "models only"
    ]
    assert fallback_errors(rules, keep_local + "\n      enabled: false") == []
    assert fallback_errors(rules, "actions: {pii: allow, secret: block, keyword: block}") == []
    # without local_model, only the rules' chains are checked
    assert len(fallback_errors("fallbacks: {local: [gpt-4o]}\n      " + rules)) == 1
