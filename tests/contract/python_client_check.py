"""Drives a live leadlex through the Python client generated from openapi/leadlex.json
(openapi-python-client): a typed 200, typed 402 and 404 errors, the rate-limit headers;
a key created, listed (nullable fields as None) and revoked through the typed API; usage
and the ledger, paged to the end; a test-mode key created through the API and every
documented trigger of docs/testing.md, each with its typed outcome.

Environment: LEADLEX_URL, LEADLEX_KEY (funded), LEADLEX_BROKE_KEY (balance 0).
"""

import os
import threading
import time
import uuid

from leadlex_client import AuthenticatedClient

from leadlex_client.api.api_keys import create_api_key, list_api_keys, revoke_api_key
from leadlex_client.api.enrichment import enrich_bulk, enrich_email_or_domain
from leadlex_client.api.usage import get_usage, list_ledger_entries
from leadlex_client.models import (
    ApiKeyCreatedResponse,
    BulkItem,
    BulkRequest,
    BulkResponse,
    CreateApiKeyRequest,
    DataSource,
    KeyMode,
    EnrichRequest,
    EnrichResponse,
    ErrorBody,
    LedgerResponse,
    ListApiKeysResponse,
    Permission,
    RateLimitTier,
    UsageResponse,
)

BASE = os.environ["LEADLEX_URL"]
passed = 0


def client(key: str) -> AuthenticatedClient:
    return AuthenticatedClient(base_url=BASE, token=key, raise_on_unexpected_status=True)


def check(name, fn):
    global passed
    fn()
    passed += 1
    print(f"python client: {name}: ok")


def success():
    resp = enrich_email_or_domain.sync_detailed(client=client(os.environ["LEADLEX_KEY"]), body=EnrichRequest(email="jane@acme.com"))
    assert resp.status_code == 200, resp.status_code
    ok = resp.parsed
    assert isinstance(ok, EnrichResponse), type(ok)
    assert ok.data.person.full_name == "Jane Doe"
    assert ok.data.company.domain == "acme.com"
    assert ok.data.source in (DataSource.VENDOR_A, DataSource.CACHED)
    assert isinstance(ok.data.credits_remaining, int) and ok.data.credits_remaining >= 0
    assert 0.0 <= ok.data.confidence <= 1.0
    limit = int(resp.headers["X-RateLimit-Limit"])
    remaining = int(resp.headers["X-RateLimit-Remaining"])
    reset = int(resp.headers["X-RateLimit-Reset"])
    assert 0 <= remaining <= limit and reset % 86400 == 0
    assert resp.headers["X-Request-ID"]


def payment_required():
    resp = enrich_email_or_domain.sync_detailed(client=client(os.environ["LEADLEX_BROKE_KEY"]), body=EnrichRequest(email="jane@acme.com"))
    assert resp.status_code == 402, resp.status_code
    assert isinstance(resp.parsed, ErrorBody), type(resp.parsed)
    assert resp.parsed.error.code == "insufficient_credits"
    assert resp.parsed.error.request_id == resp.headers["X-Request-ID"]


def no_match():
    resp = enrich_email_or_domain.sync_detailed(client=client(os.environ["LEADLEX_KEY"]), body=EnrichRequest(domain="nobody.invalid"))
    assert resp.status_code == 404, resp.status_code
    assert isinstance(resp.parsed, ErrorBody)
    assert resp.parsed.error.code == "no_match"
    int(resp.headers["X-RateLimit-Remaining"])


def key_lifecycle():
    admin = client(os.environ["LEADLEX_KEY"])
    body = CreateApiKeyRequest(name="python client", permissions=[Permission.WRITEENRICH], rate_limit_tier=RateLimitTier.STANDARD)
    idem = str(uuid.uuid4())
    resp = create_api_key.sync_detailed(client=admin, body=body, idempotency_key=idem)
    assert resp.status_code == 201, resp.status_code
    created = resp.parsed
    assert isinstance(created, ApiKeyCreatedResponse), type(created)
    assert created.data.key.startswith("wbk_") and created.data.expires_at is None and created.data.description is None
    again = create_api_key.sync_detailed(client=admin, body=body, idempotency_key=idem)
    assert again.parsed.data.key == created.data.key and again.headers["Idempotent-Replayed"] == "true"
    listed = list_api_keys.sync_detailed(client=admin, search="python client")
    assert isinstance(listed.parsed, ListApiKeysResponse), type(listed.parsed)
    assert [k.id for k in listed.parsed.data.api_keys] == [created.data.id] and listed.parsed.meta.total == 1
    assert listed.parsed.data.api_keys[0].revoked_at is None
    gone = revoke_api_key.sync_detailed(client=admin, id=created.data.id)
    assert gone.status_code == 204, gone.status_code
    missing = revoke_api_key.sync_detailed(client=admin, id="key_nope")
    assert isinstance(missing.parsed, ErrorBody) and missing.parsed.error.code == "not_found"


def usage_and_ledger():
    me = client(os.environ["LEADLEX_KEY"])
    usage = get_usage.sync_detailed(client=me)
    assert isinstance(usage.parsed, UsageResponse), type(usage.parsed)
    balance = usage.parsed.data.credits_.balance
    assert usage.parsed.data.plan == "unmetered" and usage.parsed.data.limits.per_day is None
    entries, cursor = [], None
    while True:
        page = list_ledger_entries.sync_detailed(client=me, limit=100, starting_after=cursor) if cursor else list_ledger_entries.sync_detailed(client=me, limit=100)
        assert isinstance(page.parsed, LedgerResponse), type(page.parsed)
        entries += page.parsed.data.entries
        cursor = page.parsed.meta.next_cursor
        if cursor is None:
            break
    after = get_usage.sync_detailed(client=me).parsed.data.credits_.balance
    assert sum(e.delta for e in entries) in (balance, after), (sum(e.delta for e in entries), balance, after)


def test_mode_triggers():
    admin = client(os.environ["LEADLEX_KEY"])
    made = create_api_key.sync_detailed(
        client=admin, body=CreateApiKeyRequest(name="python ci", permissions=[Permission.WRITEENRICH], mode=KeyMode.TEST)
    )
    assert made.status_code == 201 and made.parsed.data.mode == "test", made.status_code
    assert made.parsed.data.key.startswith("wbk_test_")
    test = client(made.parsed.data.key)
    balance = get_usage.sync_detailed(client=admin).parsed.data.credits_.balance
    tag = uuid.uuid4().hex

    def enrich(trigger, idem=None):
        body = EnrichRequest(email=f"{trigger}+{tag}@leadlex.test")
        if idem:
            return enrich_email_or_domain.sync_detailed(client=test, body=body, idempotency_key=idem)
        return enrich_email_or_domain.sync_detailed(client=test, body=body)

    for trigger, source in (("vendor_a", DataSource.VENDOR_A), ("vendor_b", DataSource.VENDOR_B)):
        first = enrich(trigger)
        assert first.status_code == 200 and first.parsed.data.source == source, (trigger, first.status_code)
        assert first.parsed.data.credits_remaining == balance, "never charged"
        again = enrich(trigger)
        assert again.parsed.data.source == DataSource.CACHED, again.parsed.data.source
    for trigger, status, code in (
        ("no_match", 404, "no_match"),
        ("insufficient_credits", 402, "insufficient_credits"),
        ("upstream_unavailable", 503, "upstream_unavailable"),
    ):
        resp = enrich(trigger)
        assert resp.status_code == status and isinstance(resp.parsed, ErrorBody), (trigger, resp.status_code)
        assert resp.parsed.error.code == code, resp.parsed.error.code
        if status == 503:
            assert int(resp.headers["Retry-After"]) >= 1
    idem = str(uuid.uuid4())
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(resp=enrich("slow", idem)))
    thread.start()
    time.sleep(0.3)
    in_flight = enrich("slow", idem)
    thread.join()
    assert in_flight.status_code == 409 and in_flight.parsed.error.code == "idempotency_key_in_use", in_flight.status_code
    assert slow["resp"].status_code == 200
    reused = enrich_email_or_domain.sync_detailed(client=test, body=EnrichRequest(email=f"vendor_a+{tag}@leadlex.test"), idempotency_key=idem)
    assert reused.status_code == 422 and reused.parsed.error.code == "idempotency_key_reused", reused.status_code
    statuses = [enrich("vendor_a").status_code for _ in range(3)]
    assert statuses[-1] == 429, f"the eleventh call within a minute is limited: {statuses}"
    assert get_usage.sync_detailed(client=admin).parsed.data.credits_.balance == balance


def bulk():
    me = client(os.environ["LEADLEX_KEY"])
    body = BulkRequest(items=[BulkItem(email="jane@acme.com", reference="crm-1"), BulkItem(email="not-an-email", reference="crm-2")])
    resp = enrich_bulk.sync_detailed(client=me, body=body)
    assert resp.status_code == 200 and isinstance(resp.parsed, BulkResponse), resp.status_code
    ok, bad = resp.parsed.data.results
    assert (ok.status, ok.reference, ok.data.person.full_name) == (200, "crm-1", "Jane Doe")
    assert (bad.status, bad.error.code, bad.error.details[0].field) == (400, "validation_error", "email")
    summary = resp.parsed.data.summary
    assert (summary.succeeded, summary.failed, summary.credits_charged) == (1, 1, 1)
    assert resp.parsed.data.credits_remaining == ok.data.credits_remaining


check("200 with typed fields and rate-limit headers", success)
check("a bulk call: a typed result per item, a summary", bulk)
check("usage and the whole ledger, page by page, summing to the balance", usage_and_ledger)
check("a key created (and replayed), listed and revoked", key_lifecycle)
check("typed 402 insufficient_credits", payment_required)
check("typed 404 no_match", no_match)
check("a test-mode key and every trigger: 200 vendor_a, vendor_b, cached, 404, 402, 503, 409, 422, 429", test_mode_triggers)
print(f"python client: {passed} passed, 0 failed")
