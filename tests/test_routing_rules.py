"""The routing decision, as a table and as properties; routing.yaml and providers.yaml checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import ConfigError
from hub.routing.providers import Capability, Maintenance, Provider, ProviderCatalog, load_providers
from hub.routing.recipients import Recipient, RecipientKind
from hub.routing.rules import (
    Match,
    MessageFacts,
    Outcome,
    Rule,
    RuleSet,
    check,
    decide,
    load_routing,
    load_rules,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
CITIZEN, ENTERPRISE = RecipientKind.CITIZEN, RecipientKind.ENTERPRISE
C = Capability

PROVIDERS = ProviderCatalog(
    {
        "myebox": Provider(
            id="myebox", name="My eBox", capabilities=frozenset({C.REGISTERED, C.REPLIES, C.PAYMENTS, C.EIDAS_HIGH})
        ),
        "doccle": Provider(
            id="doccle", name="Doccle", kinds=frozenset({CITIZEN}), capabilities=frozenset({C.PAYMENTS, C.REPLIES})
        ),
        "irisbox": Provider(
            id="irisbox",
            name="IRISbox",
            kinds=frozenset({CITIZEN}),
            capabilities=frozenset({C.REGISTERED, C.REPLIES}),
            maintenance=(Maintenance(start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=2)),),
        ),
        "enterprise": Provider(
            id="enterprise",
            name="Enterprise inbox",
            kinds=frozenset({ENTERPRISE}),
            capabilities=frozenset({C.REGISTERED, C.REPLIES, C.PAYMENTS}),
            universal=True,
        ),
        "paper": Provider(id="paper", name="Print", capabilities=frozenset({C.PAPER, C.REGISTERED}), universal=True),
    }
)
RULES = RuleSet(
    (
        Rule(name="city", match=Match(sender=("0207373429",)), fallback=Outcome.UNDELIVERABLE),
        Rule(name="enterprises", match=Match(recipient_kind=ENTERPRISE), deliver=("enterprise",)),
        Rule(name="default", match=Match()),
    )
)


def facts(**changes) -> MessageFacts:
    base = dict(message_type="TAX_ASSESSMENT", sender="0308357159", recipient_kind=CITIZEN, recipient_id="85073003328")
    base.update(changes)
    return MessageFacts(**base)


def citizen(*providers: str, consent=NOW - timedelta(days=30), withdrawn=None) -> Recipient:
    return Recipient(
        kind=CITIZEN, id="85073003328", consent_at=consent, withdrawn_at=withdrawn, providers=frozenset(providers)
    )


# --- the decision as a table ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message", "recipient", "outcome", "providers"),
    [
        ("every provider read with", facts(), citizen("myebox", "doccle"), Outcome.DELIVER, ("doccle", "myebox")),
        ("no consent: paper", facts(), citizen("myebox", consent=None), Outcome.PAPER, ("paper",)),
        ("unknown recipient: paper", facts(), None, Outcome.PAPER, ("paper",)),
        (
            "consent withdrawn: paper",
            facts(),
            citizen("myebox", withdrawn=NOW - timedelta(days=1)),
            Outcome.PAPER,
            ("paper",),
        ),
        (
            "consent given again after withdrawal",
            facts(),
            citizen("myebox", consent=NOW - timedelta(days=1), withdrawn=NOW - timedelta(days=5)),
            Outcome.DELIVER,
            ("myebox",),
        ),
        (
            "consent given in the future does not count",
            facts(),
            citizen("myebox", consent=NOW + timedelta(days=1)),
            Outcome.PAPER,
            ("paper",),
        ),
        (
            "registered skips a provider without proofs",
            facts(registered=True),
            citizen("myebox", "doccle"),
            Outcome.DELIVER,
            ("myebox",),
        ),
        (
            "registered with no capable provider: registered paper",
            facts(registered=True),
            citizen("doccle"),
            Outcome.PAPER,
            ("paper",),
        ),
        ("payment needs payments", facts(payment=True), citizen("irisbox", "doccle"), Outcome.DELIVER, ("doccle",)),
        (
            "eIDAS high needs eidas_high",
            facts(assurance_high=True),
            citizen("doccle", "myebox"),
            Outcome.DELIVER,
            ("myebox",),
        ),
        ("city falls back to undeliverable", facts(sender="0207373429"), None, Outcome.UNDELIVERABLE, ()),
        (
            "enterprise inbox serves every enterprise",
            facts(recipient_kind=ENTERPRISE, recipient_id="0406798006"),
            None,
            Outcome.DELIVER,
            ("enterprise",),
        ),
        ("a provider not configured is skipped", facts(), citizen("ghost"), Outcome.PAPER, ("paper",)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_decision_table(case, message, recipient, outcome, providers):
    decision = decide(message, recipient, PROVIDERS, RULES, NOW)
    assert decision.outcome is outcome, decision.reasons
    assert decision.providers == providers


def test_a_provider_in_maintenance_gets_the_delivery_after_the_window():
    decision = decide(facts(), citizen("irisbox", "doccle"), PROVIDERS, RULES, NOW)
    held = {d.provider: d for d in decision.deliveries}
    assert held["irisbox"].not_before == NOW + timedelta(hours=2)
    assert held["irisbox"].why_held == "provider in maintenance"
    assert held["doccle"].not_before is None


def test_deliveries_wait_for_the_effective_date_unless_the_rule_says_not_to():
    later = NOW + timedelta(days=1)
    decision = decide(facts(effective_date=later), citizen("myebox"), PROVIDERS, RULES, NOW)
    assert decision.deliveries[0].not_before == later
    eager = RuleSet((Rule(name="now", match=Match(), hold=False),))
    assert (
        decide(facts(effective_date=later), citizen("myebox"), PROVIDERS, eager, NOW).deliveries[0].not_before is None
    )


def test_no_matching_rule_is_undeliverable_with_a_reason():
    rules = RuleSet((Rule(name="only-tax", match=Match(message_type=("TAX_*",))),))
    decision = decide(facts(message_type="PARKING_PERMIT"), citizen("myebox"), PROVIDERS, rules, NOW)
    assert decision.outcome is Outcome.UNDELIVERABLE and decision.rule is None
    assert "catch-all" in decision.reasons[0]


def test_the_first_matching_rule_wins_and_its_priority_applies():
    rules = RuleSet(
        (Rule(name="tax", match=Match(message_type=("TAX_*",)), priority="high"), Rule(name="default", match=Match()))
    )
    decision = decide(facts(), citizen("myebox"), PROVIDERS, rules, NOW)
    assert (decision.rule, decision.priority) == ("tax", "high")
    assert decide(facts(message_type="X"), citizen("myebox"), PROVIDERS, rules, NOW).rule == "default"


def test_skipped_providers_are_explained():
    decision = decide(facts(registered=True), citizen("myebox", "doccle"), PROVIDERS, RULES, NOW)
    assert decision.skipped == (("doccle", "lacks registered"),)


# --- properties --------------------------------------------------------------------------------

provider_ids = st.sampled_from([*sorted(PROVIDERS.providers), "ghost"])
moments = st.one_of(st.none(), st.integers(-100, 100).map(lambda d: NOW + timedelta(days=d)))


@st.composite
def cases(draw):
    kind = draw(st.sampled_from([CITIZEN, ENTERPRISE]))
    message = facts(
        recipient_kind=kind,
        registered=draw(st.booleans()),
        payment=draw(st.booleans()),
        replies=draw(st.booleans()),
        assurance_high=draw(st.booleans()),
        sender=draw(st.sampled_from(["0308357159", "0207373429"])),
        effective_date=draw(moments),
    )
    recipient = draw(
        st.one_of(
            st.none(),
            st.builds(
                lambda providers, consent, withdrawn: Recipient(
                    kind=kind, id="x", consent_at=consent, withdrawn_at=withdrawn, providers=frozenset(providers)
                ),
                st.frozensets(provider_ids, max_size=4),
                moments,
                moments,
            ),
        )
    )
    return message, recipient


@settings(max_examples=400, deadline=None)
@given(cases())
def test_every_message_gets_exactly_one_coherent_outcome(case):
    message, recipient = case
    decision = decide(message, recipient, PROVIDERS, RULES, NOW)
    if decision.outcome is Outcome.DELIVER:
        assert decision.deliveries
        for delivery in decision.deliveries:
            provider = PROVIDERS[delivery.provider]
            # No provider without a capability the message needs is ever chosen
            assert message.needs() <= provider.capabilities
            assert message.recipient_kind in provider.kinds
            assert C.PAPER not in provider.capabilities
    elif decision.outcome is Outcome.PAPER:
        assert len(decision.deliveries) == 1
        assert C.PAPER in PROVIDERS[decision.deliveries[0].provider].capabilities
    else:
        assert decision.deliveries == ()
    assert len(set(decision.providers)) == len(decision.providers)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_consent_withdrawn_before_routing_is_honoured(case):
    message, recipient = case
    if recipient is None or recipient.digital_at(NOW):
        return
    decision = decide(message, recipient, PROVIDERS, RULES, NOW)
    # Only providers that serve every such recipient (the enterprise inbox) may get it digitally.
    assert all(PROVIDERS[p].universal for p in decision.providers)


# --- the files --------------------------------------------------------------------------------------


def test_the_shipped_routing_configuration_loads_and_checks_clean():
    providers, rules = load_routing(ROOT / "config")
    assert check(rules, providers) == []
    assert rules.rules[-1].match.catch_all


def write(tmp_path, name, text) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_names_unreachable_rules_and_a_missing_catch_all(tmp_path):
    path = write(
        tmp_path,
        "routing.yaml",
        """rules:
  - name: all
    match: {}
  - name: late
    match: {registered: true}
""",
    )
    problems = check(load_rules(path, PROVIDERS), PROVIDERS)
    assert problems == [f"{path}:4: rule 'late' can never match: rule 'all' (line 2) matches every message before it"]
    path = write(
        tmp_path,
        "routing.yaml",
        """rules:
  - name: a
    match: {registered: true}
  - name: b
    match: {registered: true}
""",
    )
    problems = check(load_rules(path, PROVIDERS), PROVIDERS)
    assert problems[0] == f"{path}:4: rule 'b' can never match: rule 'a' (line 2) has the same match"
    assert "no catch-all rule" in problems[1]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("rules:\n  - name: a\n    deliver: [mybox]\n", 3, "unknown provider 'mybox'; did you mean 'myebox'?"),
        ("rules:\n  - name: a\n    require: [registred]\n", 3, "did you mean 'registered'?"),
        ("rules:\n  - name: a\n    match: {mesage_type: TAX}\n", 3, "did you mean 'message_type'?"),
        ("rules:\n  - name: a\n    fallback: email\n", 3, "must be paper or undeliverable"),
        ("rules:\n  - name: a\n  - name: a\n", 3, "named twice"),
        ("rules:\n  - name: a\n    match: {priority: urgent}\n", 3, "unknown priority 'urgent'"),
    ],
)
def test_mistakes_in_routing_yaml_name_the_line(tmp_path, text, line, fragment):
    path = write(tmp_path, "routing.yaml", text)
    with pytest.raises(ConfigError) as error:
        load_rules(path, PROVIDERS)
    assert (error.value.file, error.value.line) == (str(path), line)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("providers:\n  - id: a\n    name: A\n    capabilites: [paper]\n", 4, "did you mean 'capabilities'?"),
        ("providers:\n  - id: a\n    name: A\n    capabilities: [papers]\n", 4, "did you mean 'paper'?"),
        ("providers:\n  - id: a\n    name: A\n    delivery: {channel: http, url: http://x}\n", 4, "https://"),
        ("providers:\n  - id: a b\n    name: A\n", 2, "names a queue"),
        ("providers:\n  - id: hub\n    name: Not the hub\n", 2, "the hub's own name"),
        (
            "providers:\n  - id: a\n    name: A\n    maintenance:\n      - {from: 2026-01-02T00:00:00Z, until: "
            "2026-01-01T00:00:00Z}\n",
            5,
            "'until' must come after 'from'",
        ),
    ],
)
def test_mistakes_in_providers_yaml_name_the_line(tmp_path, text, line, fragment):
    path = write(tmp_path, "providers.yaml", text)
    with pytest.raises(ConfigError) as error:
        load_providers(path)
    assert (error.value.file, error.value.line) == (str(path), line)
    assert fragment in str(error.value)


def test_provider_tokens_come_from_providers_yaml(tmp_path):
    import hashlib

    digest = hashlib.sha256(b"secret").hexdigest()
    path = write(
        tmp_path, "providers.yaml", f"providers:\n  - id: doccle\n    name: D\n    api_token_sha256: [{digest}]\n"
    )
    assert load_providers(path).tokens() == {"doccle": {digest}}


def test_hub_serve_keeps_no_access_log(monkeypatch, tmp_path):
    # Request paths carry national numbers (GET /v1/recipients/citizen/<SSIN>).
    import uvicorn

    from hub.inbound.server import serve
    from hub.settings import load_settings

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    serve(load_settings(tmp_path, {}))
    assert seen["access_log"] is False
