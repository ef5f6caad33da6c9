"""Drives a live leadlex through the Python client OpenAPI Generator makes from
openapi/leadlex.json (`-g python`, package `leadlex`), written the way that client's
generated README teaches: a `Configuration` with the bearer `access_token`, an `ApiClient`,
the generated `*Api` classes and models. It calls every operation of the spec (and fails
when the spec has one it does not call), and decodes every answer, errors included, into
the generated models: a success through the generated method, an error's body through
`ErrorBody.from_json` (which raises when the model refuses it).

Environment: LEADLEX_URL, LEADLEX_KEY (every permission, a funded unmetered workspace),
LEADLEX_BROKE_KEY (write:enrich, balance 0), LEADLEX_SPEC (the spec the client was
generated from). Run by tests/contract/run with the generated package on PYTHONPATH.
"""

import datetime
import json
import os
import re
import sys
import time
import traceback
import uuid
from urllib.parse import urlsplit

import leadlex
import pydantic
from leadlex.exceptions import ApiException
from leadlex.models import (
    ApiKeyCreatedResponse,
    BulkItem,
    BulkRequest,
    BulkResponse,
    CreateApiKeyRequest,
    CreateWebhookRequest,
    DataSource,
    DeliveryListResponse,
    DeliveryResponse,
    EnrichRequest,
    EnrichResponse,
    ErrorBody,
    Health,
    JobListResponse,
    JobRequest,
    JobResponse,
    JobResultsResponse,
    KeyMode,
    LedgerReason,
    LedgerResponse,
    ListApiKeysResponse,
    Permission,
    Readiness,
    SuppressionListResponse,
    SuppressionRequest,
    SuppressionResponse,
    SuppressionType,
    UpdateWebhookRequest,
    UsageResponse,
    WebhookEventName,
    WebhookListResponse,
    WebhookResponse,
    WebhookSecretResponse,
)

BASE = os.environ["LEADLEX_URL"]
with open(os.environ["LEADLEX_SPEC"]) as f:
    SPEC = json.load(f)
TAG = uuid.uuid4().hex[:12]  # fresh test-mode inputs on every run
# The ledger from a second before this program's first charge: its own entries, page by page.
STARTED = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
NAME = "ogen python"
JSON = "application/json; charset=utf-8"
ENRICH_ERRORS = {str(s): "ErrorBody" for s in (400, 401, 402, 403, 404, 409, 413, 415, 422, 429, 500, 503)}

# Every request the generated clients send, as (method, path), to prove each operation of
# the spec was really called on the wire.
sent = []


class RecordingApiClient(leadlex.ApiClient):
    def call_api(self, method, url, *args, **kwargs):
        sent.append((method.upper(), urlsplit(url).path))
        return super().call_api(method, url, *args, **kwargs)


def api_client(key):
    configuration = leadlex.Configuration(host=BASE, access_token=key)
    return RecordingApiClient(configuration)


def expect_error(status, code, call, *args, **kwargs) -> ErrorBody:
    """Runs a generated API method that must fail with `status` and `code`; returns the
    error body decoded into the generated ErrorBody model."""
    try:
        call(*args, **kwargs)
    except ApiException as e:
        assert e.status == status, f"expected {status} {code}, got {e.status}: {e.body}"
        # The generated client decodes an error's body itself (e.data), but swallows a
        # decoding failure; decoding it again here makes a refusal fail the run.
        err = ErrorBody.from_json(e.body)
        assert isinstance(e.data, ErrorBody), f"the generated client did not decode {e.body!r}: {e.data!r}"
        assert err == e.data
        assert err.error.code == code, f"expected code {code}, got {err.error.code}: {e.body}"
        assert err.error.request_id == e.headers["X-Request-ID"], "request_id is the X-Request-ID header"
        return err
    raise AssertionError(f"expected {status} {code}, got a success")


def raw_call(client, method, path, body, errors):
    """Sends a body the generated models would not build (an unknown field, an http://
    URL) through the generated ApiClient, as the generated methods do, and decodes the
    answer with the same machinery and the spec's response types."""
    params = client.param_serialize(
        method=method, resource_path=path, header_params={"Content-Type": JSON, "Accept": JSON}, body=body, auth_settings=["ApiKeyAuth"]
    )
    response = client.call_api(*params)
    response.read()
    return client.response_deserialize(response_data=response, response_types_map=errors)


def header(headers, name):
    """A response header of an ApiResponse (`*_with_http_info`). This client hands them as a
    plain dict, its names as the server wrote them (lower case, from leadlex): read them
    case-insensitively, as HTTP means them."""
    found = [v for k, v in headers.items() if k.lower() == name.lower()]
    assert len(found) == 1, f"header {name}: {found} in {headers}"
    return found[0]


def rate_limit_headers(headers):
    limit = int(header(headers, "X-RateLimit-Limit"))
    remaining = int(header(headers, "X-RateLimit-Remaining"))
    reset = int(header(headers, "X-RateLimit-Reset"))
    assert 0 <= remaining <= limit, (remaining, limit)
    assert reset % 86400 == 0 and reset > time.time(), f"X-RateLimit-Reset is the next 00:00 UTC: {reset}"
    return limit, remaining


live = api_client(os.environ["LEADLEX_KEY"])
broke = api_client(os.environ["LEADLEX_BROKE_KEY"])
state = {}  # what a step leaves for later ones: the test key, a job, a webhook…
results = []  # the operationId of each step done


def step(operation_id):
    def run(fn):
        summary = fn()
        results.append(operation_id)
        print(f"{NAME}: {operation_id}: {summary}: ok", flush=True)
        return fn

    return run


def main():
    # ---- Operations
    @step("healthz")
    def _():
        health = leadlex.OperationsApi(live).healthz()
        assert isinstance(health, Health) and health.status == "ok", health
        return "Health ok"

    @step("readyz")
    def _():
        ready = leadlex.OperationsApi(live).readyz()
        assert isinstance(ready, Readiness) and (ready.status, ready.database) == ("ready", "ok"), ready
        return f"Readiness {ready.status}, database {ready.database}"

    @step("metrics")
    def _():
        text = leadlex.OperationsApi(live).metrics()
        assert isinstance(text, str) and re.search(r"^# TYPE leadlex_\w+ ", text, re.MULTILINE), text[:200]
        return f"{len(text.splitlines())} lines of Prometheus text"

    # ---- API keys: a test-mode admin key, made by the live key, does the rest of the work
    @step("create_api_key")
    def _():
        keys = leadlex.ApiKeysApi(live)
        made = keys.create_api_key(
            CreateApiKeyRequest(name=f"{NAME} {TAG}", permissions=list(Permission), mode=KeyMode.TEST),
        )
        assert isinstance(made, ApiKeyCreatedResponse), type(made)
        assert made.data.key.startswith("wbk_test_") and made.data.mode == KeyMode.TEST, made.data
        assert set(made.data.permissions) == set(Permission) and made.data.expires_at is None
        state["test_key_id"] = made.data.id
        state["test"] = api_client(made.data.key)
        # The test key makes a test key of its own, idempotently.
        test_keys = leadlex.ApiKeysApi(state["test"])
        body = CreateApiKeyRequest(name=f"{NAME} child {TAG}", permissions=[Permission.WRITE_COLON_ENRICH])
        idem = uuid.uuid4()
        first = test_keys.create_api_key_with_http_info(body, idempotency_key=idem)
        again = test_keys.create_api_key_with_http_info(body, idempotency_key=idem)
        assert first.status_code == 201 and first.data.data.mode == KeyMode.TEST, first.status_code
        assert again.data.data.key == first.data.data.key and header(again.headers, "Idempotent-Replayed") == "true"
        state["child_key_id"] = first.data.data.id
        err = expect_error(
            403,
            "insufficient_permissions",
            test_keys.create_api_key,
            CreateApiKeyRequest(name="live from test", permissions=[Permission.WRITE_COLON_ENRICH], mode=KeyMode.LIVE),
        )
        return f"201 test keys (one replayed); 403 {err.error.code} for a live key asked by a test key"

    @step("list_api_keys")
    def _():
        listed = leadlex.ApiKeysApi(state["test"]).list_api_keys(search=TAG, per_page=10)
        assert isinstance(listed, ListApiKeysResponse), type(listed)
        ids = {k.id for k in listed.data.api_keys}
        assert ids == {state["test_key_id"], state["child_key_id"]}, ids
        assert listed.meta.total == 2 and all(k.mode == KeyMode.TEST and k.revoked_at is None for k in listed.data.api_keys)
        return f"{listed.meta.total} test keys, none revoked"

    # ---- Enrichment
    @step("enrich_email_or_domain")
    def _():
        enrichment = leadlex.EnrichmentApi(live)
        # The natural construction, through the variant that shows the headers.
        resp = enrichment.enrich_email_or_domain_with_http_info(EnrichRequest(email="jane@acme.com"))
        assert resp.status_code == 200 and isinstance(resp.data, EnrichResponse), resp.status_code
        data = resp.data.data
        assert data.person.full_name == "Jane Doe" and data.company.domain == "acme.com", data
        assert data.source in (DataSource.VENDOR_A, DataSource.CACHED) and 0 <= data.confidence <= 1
        limit, _ = rate_limit_headers(resp.headers)
        assert limit == 2147483647, f"unmetered: {limit}"
        # The example of the generator's own docs/EnrichmentApi.md: a plain dict.
        documented = enrichment.enrich_email_or_domain({"email": "jane@acme.com"})
        assert documented.data.person.full_name == "Jane Doe" and documented.data.source == DataSource.CACHED
        # 402 with a broke key; 404 no_match, live (an .invalid domain) and test mode (the trigger).
        e402 = expect_error(402, "insufficient_credits", leadlex.EnrichmentApi(broke).enrich_email_or_domain, EnrichRequest(email="jane@acme.com"))
        expect_error(404, "no_match", enrichment.enrich_email_or_domain, EnrichRequest(domain="nobody.invalid"))
        expect_error(
            404, "no_match", leadlex.EnrichmentApi(state["test"]).enrich_email_or_domain, EnrichRequest(email=f"no_match+{TAG}@leadlex.test")
        )
        # A misspelt field: the generated model ignores a keyword it does not know (pydantic's
        # default), so the typo never leaves the client; sent raw, the server refuses it.
        try:
            typo = EnrichRequest(email="jane@acme.com", inlcude=["company"])
        except pydantic.ValidationError as refused:
            assert "inlcude" in str(refused), refused
            client_side = "refused by the model"
        else:
            assert "inlcude" not in typo.to_dict(), typo.to_dict()
            client_side = "dropped by the model"
        err = expect_error(
            400,
            "validation_error",
            raw_call,
            live,
            "POST",
            "/v1/email/enrich",
            {"email": "jane@acme.com", "inlcude": ["company"]},
            {"200": "EnrichResponse", **ENRICH_ERRORS},
        )
        assert [d.var_field for d in err.error.details or []] == ["inlcude"], err
        return (
            f"200 {data.person.full_name} ({data.source.value}), X-RateLimit-* read; the docs' dict example 200; "
            f"402 {e402.error.code}; 404 no_match live and test; unknown field {client_side}, 400 naming it when sent"
        )

    @step("enrich_bulk")
    def _():
        body = BulkRequest(items=[BulkItem(email=f"vendor_b+{TAG}bulk@leadlex.test", reference="crm-1"), BulkItem(email="not-an-email", reference="crm-2")])
        resp = leadlex.EnrichmentApi(state["test"]).enrich_bulk(body, idempotency_key=uuid.uuid4())
        assert isinstance(resp, BulkResponse), type(resp)
        ok, bad = resp.data.results
        assert (ok.status, ok.reference, ok.data.source) == (200, "crm-1", DataSource.VENDOR_B), ok
        assert (bad.status, bad.error.code, bad.error.details[0].var_field) == (400, "validation_error", "email"), bad
        s = resp.data.summary
        assert (s.succeeded, s.failed, s.credits_charged) == (1, 1, 0), s
        return "a 200 item and a 400 item, each typed, nothing charged in test mode"

    # ---- Jobs (test mode)
    @step("submit_enrichment_job")
    def _():
        items = [
            BulkItem(email=f"vendor_a+{TAG}@leadlex.test", reference="a"),
            BulkItem(email=f"vendor_b+{TAG}@leadlex.test", reference="b"),
            BulkItem(email=f"no_match+{TAG}@leadlex.test", reference="c"),
            BulkItem(email="not-an-email", reference="d"),
        ]
        resp = leadlex.JobsApi(state["test"]).submit_enrichment_job_with_http_info(JobRequest(items=items), idempotency_key=uuid.uuid4())
        assert resp.status_code == 202 and isinstance(resp.data, JobResponse), resp.status_code
        assert resp.data.data.total == 4 and resp.data.data.status in ("queued", "running"), resp.data.data
        state["job"] = resp.data.data.id
        return f"202 {resp.data.data.id} ({resp.data.data.status})"

    @step("get_enrichment_job")
    def _():
        jobs = leadlex.JobsApi(state["test"])
        deadline, polls = time.monotonic() + 60, 0
        while True:
            job = jobs.get_enrichment_job(state["job"])
            polls += 1
            assert isinstance(job, JobResponse), type(job)
            if job.data.status not in ("queued", "running") or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        j = job.data
        assert j.status == "completed", j
        assert (j.done, j.succeeded, j.no_match, j.failed, j.credits_charged) == (4, 2, 1, 1, 0), j
        assert j.finished_at is not None and j.finished_at >= j.created_at
        expect_error(404, "not_found", jobs.get_enrichment_job, "job_nope")
        return f"completed after {polls} poll(s): 2 succeeded, 1 no_match, 1 failed; 404 not_found for an unknown id"

    @step("get_enrichment_job_results")
    def _():
        jobs = leadlex.JobsApi(state["test"])
        results, cursor, pages = [], None, 0
        while True:
            page = jobs.get_enrichment_job_results(state["job"], limit=1, starting_after=cursor)
            assert isinstance(page, JobResultsResponse), type(page)
            results += page.data.results
            pages += 1
            cursor = page.meta.next_cursor
            if cursor is None:
                break
        assert [(r.index, r.reference, r.status) for r in results] == [(0, "a", 200), (1, "b", 200), (2, "c", 404), (3, "d", 400)], results
        assert (results[1].data.source, results[2].error.code) == (DataSource.VENDOR_B, "no_match"), results
        return f"4 typed results over {pages} pages"

    @step("list_enrichment_jobs")
    def _():
        listed = leadlex.JobsApi(state["test"]).list_enrichment_jobs(limit=10)
        assert isinstance(listed, JobListResponse), type(listed)
        assert listed.data.jobs[0].id == state["job"], [j.id for j in listed.data.jobs]
        return f"the newest of {len(listed.data.jobs)} test-mode job(s) is ours"

    @step("cancel_enrichment_job")
    def _():
        jobs = leadlex.JobsApi(state["test"])
        slow = JobRequest(items=[BulkItem(email=f"slow+{TAG}{i}@leadlex.test") for i in range(20)])
        job = jobs.submit_enrichment_job(slow).data
        cancelled = jobs.cancel_enrichment_job(job.id)
        assert isinstance(cancelled, JobResponse), type(cancelled)
        assert (cancelled.data.status, cancelled.data.cancel_reason) == ("cancelled", "requested"), cancelled.data
        assert cancelled.data.done < cancelled.data.total
        assert jobs.get_enrichment_job(job.id).data.status == "cancelled"
        return f"a 20-item job cancelled at {cancelled.data.done} done"

    # ---- Usage and the ledger (live: test mode has no ledger)
    @step("get_usage")
    def _():
        usage = leadlex.UsageApi(live).get_usage()
        assert isinstance(usage, UsageResponse), type(usage)
        assert usage.data.plan == "unmetered" and usage.data.limits.per_day is None, usage.data
        assert usage.data.credits.balance > 0 and usage.data.credits.charged_today >= 2
        state["balance"] = usage.data.credits.balance
        test_usage = leadlex.UsageApi(state["test"]).get_usage()
        assert test_usage.data.credits.balance == usage.data.credits.balance, "test mode sees the live balance"
        return f"balance {usage.data.credits.balance}, {usage.data.credits.charged_today} charged today"

    @step("list_ledger_entries")
    def _():
        usage = leadlex.UsageApi(live)
        entries, cursor, pages = [], None, 0
        while True:
            page = usage.list_ledger_entries(limit=1, starting_after=cursor, var_from=STARTED)
            pages += 1
            assert isinstance(page, LedgerResponse), type(page)
            entries += page.data.entries
            cursor = page.meta.next_cursor
            if cursor is None:
                break
        assert len(entries) >= 2 and all(e.created_at >= STARTED for e in entries), entries
        charges = usage.list_ledger_entries(reason=LedgerReason.ENRICH, limit=100)
        assert charges.data.entries and all(e.delta < 0 and e.reason == "enrich" for e in charges.data.entries), charges.data
        return f"{len(entries)} entries since this program started, over {pages} pages (`from` as var_from); charges filtered by reason"

    # ---- Suppressions (test mode)
    @step("create_suppression")
    def _():
        privacy = leadlex.PrivacyApi(state["test"])
        domain = f"suppressed-{TAG}.example"
        made = privacy.create_suppression_with_http_info(SuppressionRequest(domain=domain))
        assert made.status_code == 201 and isinstance(made.data, SuppressionResponse), made.status_code
        assert made.data.data.type == SuppressionType.DOMAIN and made.data.data.hint == domain
        again = privacy.create_suppression_with_http_info(SuppressionRequest(domain=domain))
        assert again.status_code == 200 and again.data.data.id == made.data.data.id, again.status_code
        state["suppression"] = made.data.data.id
        return "201, then 200 with the same suppression"

    @step("list_suppressions")
    def _():
        listed = leadlex.PrivacyApi(state["test"]).list_suppressions(limit=10)
        assert isinstance(listed, SuppressionListResponse), type(listed)
        assert state["suppression"] in [s.id for s in listed.data.suppressions], listed.data
        return "the test list holds it"

    @step("delete_suppression")
    def _():
        privacy = leadlex.PrivacyApi(state["test"])
        gone = privacy.delete_suppression_with_http_info(state["suppression"])
        assert gone.status_code == 204 and gone.data is None, gone.status_code
        expect_error(404, "not_found", privacy.delete_suppression, state["suppression"])
        return "204, then 404 not_found"

    # ---- Webhooks (test mode). The server delivers to no loopback address unless configured
    # to (docs/webhooks.md): an https:// URL on 127.0.0.1 is taken, and each attempt is
    # refused before any connection; an http:// one is refused.
    @step("create_webhook")
    def _():
        hooks = leadlex.WebhooksApi(state["test"])
        made = hooks.create_webhook(CreateWebhookRequest(url="https://127.0.0.1:9/leadlex", events=[WebhookEventName.ENRICHMENT_DOT_JOB_DOT_COMPLETED]))
        assert isinstance(made, WebhookSecretResponse), type(made)
        assert made.data.secret.startswith("whsec_") and made.data.url == "https://127.0.0.1:9/leadlex", made.data
        state["webhook"], state["secret"] = made.data.id, made.data.secret
        try:
            CreateWebhookRequest(url="http://127.0.0.1:9/leadlex", events=[WebhookEventName.API_KEY_DOT_CREATED])
            raise AssertionError("the model took an http:// URL")
        except pydantic.ValidationError:
            pass
        err = expect_error(
            400,
            "validation_error",
            raw_call,
            state["test"],
            "POST",
            "/v1/webhooks",
            {"url": "http://127.0.0.1:9/leadlex", "events": ["api_key.created"]},
            {"201": "WebhookSecretResponse", "400": "ErrorBody"},
        )
        assert [d.var_field for d in err.error.details or []] == ["url"], err
        return "201 for https://127.0.0.1 with a whsec_ secret; http://127.0.0.1 refused by the model, and 400 naming url when sent"

    @step("get_webhook")
    def _():
        got = leadlex.WebhooksApi(state["test"]).get_webhook(state["webhook"])
        assert isinstance(got, WebhookResponse) and got.data.id == state["webhook"] and got.data.active, got
        assert got.data.last_delivery_status is None and got.data.description is None
        return "the webhook, never its secret"

    @step("list_webhooks")
    def _():
        listed = leadlex.WebhooksApi(state["test"]).list_webhooks(limit=20)
        assert isinstance(listed, WebhookListResponse), type(listed)
        assert state["webhook"] in [w.id for w in listed.data.webhooks], listed.data
        return "the test-mode list holds it"

    @step("update_webhook")
    def _():
        change = UpdateWebhookRequest(description="CRM sync", events=[WebhookEventName.API_KEY_DOT_CREATED, WebhookEventName.API_KEY_DOT_REVOKED])
        updated = leadlex.WebhooksApi(state["test"]).update_webhook(state["webhook"], change)
        assert isinstance(updated, WebhookResponse), type(updated)
        assert updated.data.description == "CRM sync" and updated.data.events == ["api_key.created", "api_key.revoked"], updated.data
        return "description and events changed"

    @step("rotate_webhook_secret")
    def _():
        rotated = leadlex.WebhooksApi(state["test"]).rotate_webhook_secret(state["webhook"])
        assert isinstance(rotated, WebhookSecretResponse), type(rotated)
        assert rotated.data.secret.startswith("whsec_") and rotated.data.secret != state["secret"]
        return "a new whsec_ secret"

    @step("test_webhook")
    def _():
        ping = leadlex.WebhooksApi(state["test"]).test_webhook(state["webhook"])
        assert isinstance(ping, DeliveryResponse), type(ping)
        d = ping.data
        assert d.event == "ping" and d.attempt == 1 and d.status_code is None, d
        assert d.status in ("pending", "failed") and "refused address" in (d.error or ""), d
        state["delivery"] = d.id
        return f"ping attempted, refused before connecting: {d.error}"

    @step("list_webhook_deliveries")
    def _():
        listed = leadlex.WebhooksApi(state["test"]).list_webhook_deliveries(state["webhook"], limit=10)
        assert isinstance(listed, DeliveryListResponse), type(listed)
        assert [d.id for d in listed.data.deliveries] == [state["delivery"]], listed.data
        return "the ping's delivery"

    @step("redeliver_webhook_delivery")
    def _():
        hooks = leadlex.WebhooksApi(state["test"])
        resp = hooks.redeliver_webhook_delivery_with_http_info(state["webhook"], state["delivery"])
        assert resp.status_code == 202 and isinstance(resp.data, DeliveryResponse), resp.status_code
        assert resp.data.data.id == state["delivery"] and resp.data.data.event == "ping"
        expect_error(404, "not_found", hooks.redeliver_webhook_delivery, state["webhook"], str(uuid.uuid4()))
        return "202, the same delivery queued again; 404 not_found for an unknown delivery"

    @step("delete_webhook")
    def _():
        hooks = leadlex.WebhooksApi(state["test"])
        gone = hooks.delete_webhook_with_http_info(state["webhook"])
        assert gone.status_code == 204, gone.status_code
        expect_error(404, "not_found", hooks.get_webhook, state["webhook"])
        return "204, then 404 not_found"

    # ---- Revoking: only the keys this program made
    @step("revoke_api_key")
    def _():
        test_keys = leadlex.ApiKeysApi(state["test"])
        gone = test_keys.revoke_api_key_with_http_info(state["child_key_id"])
        assert gone.status_code == 204, gone.status_code
        listed = test_keys.list_api_keys(search=TAG, include_revoked=True)
        child = next(k for k in listed.data.api_keys if k.id == state["child_key_id"])
        assert child.revoked_at is not None, child
        expect_error(404, "not_found", test_keys.revoke_api_key, "key_nope")
        leadlex.ApiKeysApi(live).revoke_api_key(state["test_key_id"])
        expect_error(401, "invalid_key", leadlex.UsageApi(state["test"]).get_usage)
        return "204 for both keys this program made (revoked_at set, the test key then 401 invalid_key); 404 not_found for an unknown id"

    # ---- Every operation of the spec was called, on the wire.
    operations = {}
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
                pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"
                operations[op["operationId"]] = (method.upper(), re.compile(pattern))
    missing = sorted(set(operations) - set(results))
    assert not missing, f"operations of the spec this program does not call: {missing}"
    unknown = sorted(set(results) - set(operations))
    assert not unknown, f"steps for operations the spec no longer has: {unknown}"
    unsent = [o for o, (m, p) in operations.items() if not any(m == sm and p.match(sp) for sm, sp in sent)]
    assert not unsent, f"operations never sent: {unsent}"
    print(f"{NAME}: every operation of the spec called ({len(operations)}), {len(sent)} requests")


try:
    main()
except Exception:  # noqa: BLE001 (any failure fails the run, and is counted)
    traceback.print_exc(file=sys.stdout)
    print(f"{NAME}: {len(results)} passed, 1 failed")
    sys.exit(1)
print(f"{NAME}: {len(results)} passed, 0 failed")
