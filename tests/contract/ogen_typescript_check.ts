// Drives a live leadlex through the TypeScript client OpenAPI Generator makes from
// openapi/leadlex.json (`-g typescript-fetch`), written the way that client's generated
// docs teach: a `Configuration` with the bearer `accessToken`, the generated `*Api`
// classes and models, `ResponseError` for an error status. It calls every operation of the
// spec (and fails when the spec has one it does not call) and decodes every answer, errors
// included, into the generated models: `*FromJSON` must take the body, and the model
// written back (`*ToJSON`) must be the body that came (same fields, same values, dates as
// the same instants), so that a field the models do not know, a null they do not allow or
// a date they cannot read fails the run. Type-checked with tsc (tsconfig.ogen.json),
// together with the generated client, before it runs.
//
// Environment: LEADLEX_URL, LEADLEX_KEY (every permission, a funded unmetered
// workspace), LEADLEX_BROKE_KEY (write:enrich, balance 0), LEADLEX_SPEC (the spec the
// client was generated from). tests/contract/run links the generated client (under
// target/) to ./generated/ogen-typescript-fetch.

import fs from "node:fs";
import {
  ApiKeysApi,
  Configuration,
  DataSource,
  EnrichmentApi,
  JobsApi,
  KeyMode,
  LedgerReason,
  OperationsApi,
  Permission,
  PrivacyApi,
  ResponseError,
  SuppressionType,
  UsageApi,
  WebhookEventName,
  WebhooksApi,
  ApiKeyCreatedResponseToJSON,
  BulkResponseToJSON,
  DeliveryListResponseToJSON,
  DeliveryResponseToJSON,
  EnrichRequestToJSON,
  EnrichResponseToJSON,
  ErrorBodyFromJSON,
  ErrorBodyToJSON,
  HealthToJSON,
  JobListResponseToJSON,
  JobResponseToJSON,
  JobResultsResponseToJSON,
  LedgerResponseToJSON,
  ListApiKeysResponseToJSON,
  ReadinessToJSON,
  SuppressionListResponseToJSON,
  SuppressionResponseToJSON,
  UsageResponseToJSON,
  WebhookListResponseToJSON,
  WebhookResponseToJSON,
  WebhookSecretResponseToJSON,
  instanceOfErrorBody,
} from "./generated/ogen-typescript-fetch/index";
import type { BulkItemResult, EnrichRequest, ErrorBody, Middleware } from "./generated/ogen-typescript-fetch/index";

const NAME = "ogen typescript";
const basePath = process.env.LEADLEX_URL!;
const spec = JSON.parse(fs.readFileSync(process.env.LEADLEX_SPEC!, "utf8"));
const tag = crypto.randomUUID().replaceAll("-", "").slice(0, 12); // fresh test-mode inputs on every run
// The ledger from a second before this program's first charge: its own entries, page by page.
const started = new Date(Date.now() - 1000);

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

// Every request sent, as [method, path], to prove each operation of the spec was really
// called; and the body of the last JSON answer, to compare with what the models made of it.
const sent: [string, string][] = [];
let lastBody: { url: string; text: string } | undefined;
const observe: Middleware = {
  async pre({ url, init }) {
    sent.push([(init.method ?? "GET").toUpperCase(), new URL(url).pathname]);
  },
  async post({ url, response }) {
    const type = response.headers.get("content-type") ?? "";
    lastBody = type.startsWith("application/json") ? { url, text: await response.clone().text() } : undefined;
  },
};

const config = (accessToken: string) => new Configuration({ basePath, accessToken, middleware: [observe] });

// The differences between the JSON that came and the model written back; dates compare as
// instants (the models hold a Date, written back in UTC).
function differences(came: unknown, back: unknown, at = "$"): string[] {
  if (typeof came === "string" && typeof back === "string" && came !== back) {
    const rfc3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
    return rfc3339.test(came) && Date.parse(came) === Date.parse(back) ? [] : [`${at}: ${JSON.stringify(came)} became ${JSON.stringify(back)}`];
  }
  if (Array.isArray(came) && Array.isArray(back)) {
    if (came.length !== back.length) return [`${at}: ${came.length} items became ${back.length}`];
    return came.flatMap((c, i) => differences(c, back[i], `${at}[${i}]`));
  }
  if (came && back && typeof came === "object" && typeof back === "object" && !Array.isArray(came) && !Array.isArray(back)) {
    const keys = new Set([...Object.keys(came), ...Object.keys(back)]);
    return [...keys].flatMap((k) => {
      const [c, b] = [(came as Record<string, unknown>)[k], (back as Record<string, unknown>)[k]];
      if (!(k in came)) return [`${at}.${k}: absent, the model added ${JSON.stringify(b)}`];
      if (!(k in back)) return [`${at}.${k}: ${JSON.stringify(c)} dropped by the model`];
      return differences(c, b, `${at}.${k}`);
    });
  }
  return came === back ? [] : [`${at}: ${JSON.stringify(came)} became ${JSON.stringify(back)}`];
}

function sameAsSent(came: unknown, model: unknown, what: string) {
  const back = JSON.parse(JSON.stringify(model)); // as the model would be sent on
  const diff = differences(came, back);
  assert(diff.length === 0, `the ${what} models do not hold the answer:\n  ${diff.join("\n  ")}`);
}

// A success decoded by the generated method: the model must hold the body that came.
function typed<T>(value: T, toJSON: (v: T) => unknown, what: string): T {
  assert(lastBody, `${what}: no JSON answer seen`);
  sameAsSent(JSON.parse(lastBody.text), toJSON(value), what);
  lastBody = undefined;
  return value;
}

// A call that must fail with `status` and `code`: its body decoded into ErrorBody.
async function expectError(status: number, code: string, call: () => Promise<unknown>): Promise<ErrorBody> {
  try {
    await call();
  } catch (e) {
    if (!(e instanceof ResponseError)) throw e;
    const body = await e.response.json();
    assert(e.response.status === status, `expected ${status} ${code}, got ${e.response.status}: ${JSON.stringify(body)}`);
    const err = ErrorBodyFromJSON(body);
    assert(instanceOfErrorBody(err), `not an ErrorBody: ${JSON.stringify(body)}`);
    sameAsSent(body, ErrorBodyToJSON(err), "ErrorBody");
    assert(err.error.code === code, `expected code ${code}, got ${err.error.code}`);
    assert(err.error.requestId === e.response.headers.get("X-Request-ID"), "requestId is the X-Request-ID header");
    return err;
  }
  throw new Error(`expected ${status} ${code}, got a success`);
}

function rateLimitHeaders(headers: Headers): [number, number] {
  const [limit, remaining, reset] = ["Limit", "Remaining", "Reset"].map((h) => Number(headers.get(`X-RateLimit-${h}`)));
  assert(Number.isInteger(limit) && Number.isInteger(remaining) && remaining <= limit && remaining >= 0, `limit ${limit}, remaining ${remaining}`);
  assert(reset % 86400 === 0 && reset > Date.now() / 1000, `X-RateLimit-Reset is the next 00:00 UTC: ${reset}`);
  return [limit, remaining];
}

const live = config(process.env.LEADLEX_KEY!);
const broke = config(process.env.LEADLEX_BROKE_KEY!);
const state: {
  test?: Configuration;
  testKeyId?: string;
  childKeyId?: string;
  job?: string;
  suppression?: string;
  webhook?: string;
  secret?: string;
  delivery?: string;
} = {};
const passed: string[] = [];

async function step(operationId: string, fn: () => Promise<string>) {
  const summary = await fn();
  passed.push(operationId);
  console.log(`${NAME}: ${operationId}: ${summary}: ok`);
}

async function main() {
  // ---- Operations
  await step("healthz", async () => {
    const health = typed(await new OperationsApi(live).healthz(), HealthToJSON, "Health");
    assert(health.status === "ok", health.status);
    return "Health ok";
  });
  await step("readyz", async () => {
    const ready = typed(await new OperationsApi(live).readyz(), ReadinessToJSON, "Readiness");
    assert(ready.status === "ready" && ready.database === "ok", JSON.stringify(ready));
    return `Readiness ${ready.status}, database ${ready.database}`;
  });
  await step("metrics", async () => {
    const text = await new OperationsApi(live).metrics();
    assert(typeof text === "string" && /^# TYPE leadlex_\w+ /m.test(text), text.slice(0, 200));
    return `${text.split("\n").length} lines of Prometheus text`;
  });

  // ---- API keys: a test-mode admin key, made by the live key, does the rest of the work
  await step("create_api_key", async () => {
    const made = typed(
      await new ApiKeysApi(live).createApiKey({
        createApiKeyRequest: { name: `${NAME} ${tag}`, permissions: new Set(Object.values(Permission)), mode: KeyMode.Test },
      }),
      ApiKeyCreatedResponseToJSON,
      "ApiKeyCreatedResponse",
    );
    assert(made.data.key.startsWith("wbk_test_") && made.data.mode === KeyMode.Test, JSON.stringify(made.data));
    assert(made.data.permissions.length === 5 && made.data.expiresAt === null, JSON.stringify(made.data));
    state.testKeyId = made.data.id;
    state.test = config(made.data.key);
    // The test key makes a test key of its own, idempotently.
    const keys = new ApiKeysApi(state.test);
    const request = { createApiKeyRequest: { name: `${NAME} child ${tag}`, permissions: new Set([Permission.WriteEnrich]) }, idempotencyKey: crypto.randomUUID() };
    const first = await keys.createApiKeyRaw(request);
    const firstValue = typed(await first.value(), ApiKeyCreatedResponseToJSON, "ApiKeyCreatedResponse");
    const again = await keys.createApiKeyRaw(request);
    const againValue = typed(await again.value(), ApiKeyCreatedResponseToJSON, "ApiKeyCreatedResponse");
    assert(first.raw.status === 201 && firstValue.data.mode === KeyMode.Test, `status ${first.raw.status}`);
    assert(againValue.data.key === firstValue.data.key && again.raw.headers.get("Idempotent-Replayed") === "true", "replayed");
    state.childKeyId = firstValue.data.id;
    const err = await expectError(403, "insufficient_permissions", () =>
      keys.createApiKey({ createApiKeyRequest: { name: "live from test", permissions: new Set([Permission.WriteEnrich]), mode: KeyMode.Live } }),
    );
    return `201 test keys (one replayed); 403 ${err.error.code} for a live key asked by a test key`;
  });
  await step("list_api_keys", async () => {
    const listed = typed(await new ApiKeysApi(state.test).listApiKeys({ search: tag, perPage: 10 }), ListApiKeysResponseToJSON, "ListApiKeysResponse");
    const ids = new Set(listed.data.apiKeys.map((k) => k.id));
    assert(ids.size === 2 && ids.has(state.testKeyId!) && ids.has(state.childKeyId!), [...ids].join());
    assert(listed.meta.total === 2 && listed.data.apiKeys.every((k) => k.mode === KeyMode.Test && k.revokedAt === null), JSON.stringify(listed));
    return `${listed.meta.total} test keys, none revoked`;
  });

  // ---- Enrichment
  await step("enrich_email_or_domain", async () => {
    const enrichment = new EnrichmentApi(live);
    // The natural construction, through the variant that shows the headers.
    const resp = await enrichment.enrichEmailOrDomainRaw({ enrichRequest: { email: "jane@acme.com" } });
    const ok = typed(await resp.value(), EnrichResponseToJSON, "EnrichResponse");
    assert(resp.raw.status === 200, `status ${resp.raw.status}`);
    assert(ok.data.person?.fullName === "Jane Doe" && ok.data.company?.domain === "acme.com", JSON.stringify(ok.data));
    assert(ok.data.source === DataSource.VendorA || ok.data.source === DataSource.Cached, ok.data.source);
    assert(ok.data.confidence >= 0 && ok.data.confidence <= 1 && ok.data.fetchedAt instanceof Date, "confidence, fetchedAt");
    const [limit] = rateLimitHeaders(resp.raw.headers);
    assert(limit === 2147483647, `unmetered: ${limit}`);
    // The generated docs' own shape: the request object, a plain literal.
    const again = typed(await enrichment.enrichEmailOrDomain({ enrichRequest: { email: "jane@acme.com" } }), EnrichResponseToJSON, "EnrichResponse");
    assert(again.data.source === DataSource.Cached, again.data.source);
    // 402 with a broke key; 404 no_match, live (an .invalid domain) and test mode (the trigger).
    const e402 = await expectError(402, "insufficient_credits", () =>
      new EnrichmentApi(broke).enrichEmailOrDomain({ enrichRequest: { email: "jane@acme.com" } }),
    );
    await expectError(404, "no_match", () => enrichment.enrichEmailOrDomain({ enrichRequest: { domain: "nobody.invalid" } }));
    await expectError(404, "no_match", () =>
      new EnrichmentApi(state.test).enrichEmailOrDomain({ enrichRequest: { email: `no_match+${tag}@leadlex.test` } }),
    );
    // A misspelt field: the compiler refuses it, the model's ToJSON would drop it; sent
    // anyway (initOverrides replaces the body, which the runtime then stringifies), the
    // server refuses it, naming it.
    // @ts-expect-error: `inlcude` is not a field of EnrichRequest
    const typo: EnrichRequest = { email: "jane@acme.com", inlcude: ["company"] };
    assert(!("inlcude" in EnrichRequestToJSON(typo)), "the model drops an unknown field");
    const raw = { email: "jane@acme.com", inlcude: ["company"] } as unknown as BodyInit;
    const e400 = await expectError(400, "validation_error", () =>
      enrichment.enrichEmailOrDomain({ enrichRequest: typo }, async ({ init }) => ({ ...init, body: raw })),
    );
    assert(JSON.stringify(e400.error.details?.map((d) => d.field)) === '["inlcude"]', JSON.stringify(e400.error));
    return (
      `200 ${ok.data.person.fullName} (${ok.data.source}), X-RateLimit-* read; 402 ${e402.error.code}; ` +
      "404 no_match live and test; unknown field refused by tsc, dropped by the model, 400 naming it when sent"
    );
  });
  await step("enrich_bulk", async () => {
    const resp = typed(
      await new EnrichmentApi(state.test).enrichBulk({
        bulkRequest: { items: [{ email: `vendor_b+${tag}bulk@leadlex.test`, reference: "crm-1" }, { email: "not-an-email", reference: "crm-2" }] },
        idempotencyKey: crypto.randomUUID(),
      }),
      BulkResponseToJSON,
      "BulkResponse",
    );
    const [ok, bad] = resp.data.results;
    assert(ok.status === 200 && ok.reference === "crm-1" && ok.data?.source === DataSource.VendorB, JSON.stringify(ok));
    assert(bad.status === 400 && bad.error?.code === "validation_error" && bad.error.details?.[0].field === "email", JSON.stringify(bad));
    const s = resp.data.summary;
    assert(s.succeeded === 1 && s.failed === 1 && s.creditsCharged === 0, JSON.stringify(s));
    return "a 200 item and a 400 item, each typed, nothing charged in test mode";
  });

  // ---- Jobs (test mode)
  await step("submit_enrichment_job", async () => {
    const resp = await new JobsApi(state.test).submitEnrichmentJobRaw({
      jobRequest: {
        items: [
          { email: `vendor_a+${tag}@leadlex.test`, reference: "a" },
          { email: `vendor_b+${tag}@leadlex.test`, reference: "b" },
          { email: `no_match+${tag}@leadlex.test`, reference: "c" },
          { email: "not-an-email", reference: "d" },
        ],
      },
      idempotencyKey: crypto.randomUUID(),
    });
    const job = typed(await resp.value(), JobResponseToJSON, "JobResponse").data;
    assert(resp.raw.status === 202 && job.total === 4 && (job.status === "queued" || job.status === "running"), JSON.stringify(job));
    state.job = job.id;
    return `202 ${job.id} (${job.status})`;
  });
  await step("get_enrichment_job", async () => {
    const jobs = new JobsApi(state.test);
    const deadline = Date.now() + 60_000;
    let polls = 0;
    let job;
    for (;;) {
      job = typed(await jobs.getEnrichmentJob({ id: state.job! }), JobResponseToJSON, "JobResponse").data;
      polls += 1;
      if ((job.status !== "queued" && job.status !== "running") || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert(job.status === "completed", JSON.stringify(job));
    assert(
      job.done === 4 && job.succeeded === 2 && job.noMatch === 1 && job.failed === 1 && job.creditsCharged === 0,
      JSON.stringify(job),
    );
    assert(job.finishedAt instanceof Date && job.finishedAt >= job.createdAt, "finishedAt");
    await expectError(404, "not_found", () => jobs.getEnrichmentJob({ id: "job_nope" }));
    return `completed after ${polls} poll(s): 2 succeeded, 1 no_match, 1 failed; 404 not_found for an unknown id`;
  });
  await step("get_enrichment_job_results", async () => {
    const jobs = new JobsApi(state.test);
    const results: BulkItemResult[] = [];
    let cursor: string | undefined;
    let pages = 0;
    for (;;) {
      const page = typed(
        await jobs.getEnrichmentJobResults({ id: state.job!, limit: 1, startingAfter: cursor }),
        JobResultsResponseToJSON,
        "JobResultsResponse",
      );
      results.push(...page.data.results);
      pages += 1;
      if (page.meta.nextCursor == null) break;
      cursor = page.meta.nextCursor;
    }
    const shape = results.map((r) => [r.index, r.reference, r.status]);
    assert(JSON.stringify(shape) === JSON.stringify([[0, "a", 200], [1, "b", 200], [2, "c", 404], [3, "d", 400]]), JSON.stringify(shape));
    assert(results[1].data?.source === DataSource.VendorB && results[2].error?.code === "no_match", JSON.stringify(results));
    return `4 typed results over ${pages} pages`;
  });
  await step("list_enrichment_jobs", async () => {
    const listed = typed(await new JobsApi(state.test).listEnrichmentJobs({ limit: 10 }), JobListResponseToJSON, "JobListResponse");
    assert(listed.data.jobs[0]?.id === state.job, listed.data.jobs.map((j) => j.id).join());
    return `the newest of ${listed.data.jobs.length} test-mode job(s) is ours`;
  });
  await step("cancel_enrichment_job", async () => {
    const jobs = new JobsApi(state.test);
    const items = Array.from({ length: 20 }, (_, i) => ({ email: `slow+${tag}${i}@leadlex.test` }));
    const job = typed(await jobs.submitEnrichmentJob({ jobRequest: { items } }), JobResponseToJSON, "JobResponse").data;
    const cancelled = typed(await jobs.cancelEnrichmentJob({ id: job.id }), JobResponseToJSON, "JobResponse").data;
    assert(cancelled.status === "cancelled" && cancelled.cancelReason === "requested" && cancelled.done < cancelled.total, JSON.stringify(cancelled));
    const after = typed(await jobs.getEnrichmentJob({ id: job.id }), JobResponseToJSON, "JobResponse").data;
    assert(after.status === "cancelled", after.status);
    return `a 20-item job cancelled at ${cancelled.done} done`;
  });

  // ---- Usage and the ledger (live: test mode has no ledger)
  await step("get_usage", async () => {
    const usage = typed(await new UsageApi(live).getUsage(), UsageResponseToJSON, "UsageResponse").data;
    assert(usage.plan === "unmetered" && usage.limits.perDay === null, JSON.stringify(usage));
    assert(usage.credits.balance > 0 && usage.credits.chargedToday >= 2, JSON.stringify(usage.credits));
    const test = typed(await new UsageApi(state.test).getUsage(), UsageResponseToJSON, "UsageResponse").data;
    assert(test.credits.balance === usage.credits.balance, "test mode sees the live balance");
    return `balance ${usage.credits.balance}, ${usage.credits.chargedToday} charged today`;
  });
  await step("list_ledger_entries", async () => {
    const usage = new UsageApi(live);
    const entries = [];
    let cursor: string | undefined;
    let pages = 0;
    for (;;) {
      const page = typed(await usage.listLedgerEntries({ limit: 1, startingAfter: cursor, from: started }), LedgerResponseToJSON, "LedgerResponse");
      pages += 1;
      entries.push(...page.data.entries);
      if (page.meta.nextCursor == null) break;
      cursor = page.meta.nextCursor;
    }
    assert(entries.length >= 2 && entries.every((e) => e.createdAt >= started), `${entries.length} entries`);
    const charges = typed(await usage.listLedgerEntries({ reason: LedgerReason.Enrich, limit: 100 }), LedgerResponseToJSON, "LedgerResponse");
    assert(charges.data.entries.length > 0 && charges.data.entries.every((e) => e.delta < 0 && e.reason === "enrich"), JSON.stringify(charges.data));
    return `${entries.length} entries since this program started, over ${pages} pages; charges filtered by reason`;
  });

  // ---- Suppressions (test mode)
  await step("create_suppression", async () => {
    const privacy = new PrivacyApi(state.test);
    const domain = `suppressed-${tag}.example`;
    const made = await privacy.createSuppressionRaw({ suppressionRequest: { domain } });
    const first = typed(await made.value(), SuppressionResponseToJSON, "SuppressionResponse").data;
    assert(made.raw.status === 201 && first.type === SuppressionType.Domain && first.hint === domain, JSON.stringify(first));
    const again = await privacy.createSuppressionRaw({ suppressionRequest: { domain } });
    const second = typed(await again.value(), SuppressionResponseToJSON, "SuppressionResponse").data;
    assert(again.raw.status === 200 && second.id === first.id, `status ${again.raw.status}`);
    state.suppression = first.id;
    return "201, then 200 with the same suppression";
  });
  await step("list_suppressions", async () => {
    const listed = typed(await new PrivacyApi(state.test).listSuppressions({ limit: 10 }), SuppressionListResponseToJSON, "SuppressionListResponse");
    assert(listed.data.suppressions.some((s) => s.id === state.suppression), JSON.stringify(listed.data));
    return "the test list holds it";
  });
  await step("delete_suppression", async () => {
    const privacy = new PrivacyApi(state.test);
    const gone = await privacy.deleteSuppressionRaw({ id: state.suppression! });
    assert(gone.raw.status === 204, `status ${gone.raw.status}`);
    await expectError(404, "not_found", () => privacy.deleteSuppression({ id: state.suppression! }));
    return "204, then 404 not_found";
  });

  // ---- Webhooks (test mode). The server delivers to no loopback address unless configured
  // to (docs/webhooks.md): an https:// URL on 127.0.0.1 is taken, and each attempt is
  // refused before any connection; an http:// one is refused.
  await step("create_webhook", async () => {
    const hooks = new WebhooksApi(state.test);
    const made = typed(
      await hooks.createWebhook({ createWebhookRequest: { url: "https://127.0.0.1:9/leadlex", events: new Set([WebhookEventName.EnrichmentJobCompleted]) } }),
      WebhookSecretResponseToJSON,
      "WebhookSecretResponse",
    ).data;
    assert(made.secret.startsWith("whsec_") && made.url === "https://127.0.0.1:9/leadlex", JSON.stringify(made));
    state.webhook = made.id;
    state.secret = made.secret;
    const err = await expectError(400, "validation_error", () =>
      hooks.createWebhook({ createWebhookRequest: { url: "http://127.0.0.1:9/leadlex", events: new Set([WebhookEventName.ApiKeyCreated]) } }),
    );
    assert(err.error.details?.[0]?.field === "url", JSON.stringify(err.error));
    return "201 for https://127.0.0.1 with a whsec_ secret; 400 naming url for http://127.0.0.1";
  });
  await step("get_webhook", async () => {
    const got = typed(await new WebhooksApi(state.test).getWebhook({ id: state.webhook! }), WebhookResponseToJSON, "WebhookResponse").data;
    assert(got.id === state.webhook && got.active && got.lastDeliveryStatus === null && got.description === null, JSON.stringify(got));
    assert(!("secret" in got), "never the secret");
    return "the webhook, never its secret";
  });
  await step("list_webhooks", async () => {
    const listed = typed(await new WebhooksApi(state.test).listWebhooks({ limit: 20 }), WebhookListResponseToJSON, "WebhookListResponse");
    assert(listed.data.webhooks.some((w) => w.id === state.webhook), JSON.stringify(listed.data));
    return "the test-mode list holds it";
  });
  await step("update_webhook", async () => {
    const updated = typed(
      await new WebhooksApi(state.test).updateWebhook({
        id: state.webhook!,
        updateWebhookRequest: { description: "CRM sync", events: new Set([WebhookEventName.ApiKeyCreated, WebhookEventName.ApiKeyRevoked]) },
      }),
      WebhookResponseToJSON,
      "WebhookResponse",
    ).data;
    assert(updated.description === "CRM sync" && updated.events.join() === "api_key.created,api_key.revoked", JSON.stringify(updated));
    return "description and events changed";
  });
  await step("rotate_webhook_secret", async () => {
    const rotated = typed(
      await new WebhooksApi(state.test).rotateWebhookSecret({ id: state.webhook! }),
      WebhookSecretResponseToJSON,
      "WebhookSecretResponse",
    ).data;
    assert(rotated.secret.startsWith("whsec_") && rotated.secret !== state.secret, "a new secret");
    return "a new whsec_ secret";
  });
  await step("test_webhook", async () => {
    const d = typed(await new WebhooksApi(state.test).testWebhook({ id: state.webhook! }), DeliveryResponseToJSON, "DeliveryResponse").data;
    assert(d.event === "ping" && d.attempt === 1 && d.statusCode === null, JSON.stringify(d));
    assert((d.status === "pending" || d.status === "failed") && (d.error ?? "").includes("refused address"), JSON.stringify(d));
    state.delivery = d.id;
    return `ping attempted, refused before connecting: ${d.error}`;
  });
  await step("list_webhook_deliveries", async () => {
    const listed = typed(
      await new WebhooksApi(state.test).listWebhookDeliveries({ id: state.webhook!, limit: 10 }),
      DeliveryListResponseToJSON,
      "DeliveryListResponse",
    );
    assert(listed.data.deliveries.map((d) => d.id).join() === state.delivery, JSON.stringify(listed.data));
    return "the ping's delivery";
  });
  await step("redeliver_webhook_delivery", async () => {
    const hooks = new WebhooksApi(state.test);
    const resp = await hooks.redeliverWebhookDeliveryRaw({ id: state.webhook!, deliveryId: state.delivery! });
    const d = typed(await resp.value(), DeliveryResponseToJSON, "DeliveryResponse").data;
    assert(resp.raw.status === 202 && d.id === state.delivery && d.event === "ping", `status ${resp.raw.status}`);
    await expectError(404, "not_found", () => hooks.redeliverWebhookDelivery({ id: state.webhook!, deliveryId: crypto.randomUUID() }));
    return "202, the same delivery queued again; 404 not_found for an unknown delivery";
  });
  await step("delete_webhook", async () => {
    const hooks = new WebhooksApi(state.test);
    const gone = await hooks.deleteWebhookRaw({ id: state.webhook! });
    assert(gone.raw.status === 204, `status ${gone.raw.status}`);
    await expectError(404, "not_found", () => hooks.getWebhook({ id: state.webhook! }));
    return "204, then 404 not_found";
  });

  // ---- Revoking: only the keys this program made
  await step("revoke_api_key", async () => {
    const keys = new ApiKeysApi(state.test);
    const gone = await keys.revokeApiKeyRaw({ id: state.childKeyId! });
    assert(gone.raw.status === 204, `status ${gone.raw.status}`);
    const listed = typed(await keys.listApiKeys({ search: tag, includeRevoked: true }), ListApiKeysResponseToJSON, "ListApiKeysResponse");
    const child = listed.data.apiKeys.find((k) => k.id === state.childKeyId);
    assert(child?.revokedAt instanceof Date, JSON.stringify(child));
    await expectError(404, "not_found", () => keys.revokeApiKey({ id: "key_nope" }));
    await new ApiKeysApi(live).revokeApiKey({ id: state.testKeyId! });
    await expectError(401, "invalid_key", () => new UsageApi(state.test).getUsage());
    return "204 for both keys this program made (revokedAt set, the test key then 401 invalid_key); 404 not_found for an unknown id";
  });

  // ---- Every operation of the spec was called, on the wire.
  const operations = new Map<string, [string, RegExp]>();
  for (const [path, item] of Object.entries<Record<string, { operationId: string }>>(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "put", "post", "delete", "patch", "head", "options", "trace"].includes(method)) continue;
      const pattern = "^" + path.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^/]+?\}/g, "[^/]+") + "$";
      operations.set(op.operationId, [method.toUpperCase(), new RegExp(pattern)]);
    }
  }
  const missing = [...operations.keys()].filter((o) => !passed.includes(o));
  assert(missing.length === 0, `operations of the spec this program does not call: ${missing.join(", ")}`);
  const unknown = passed.filter((o) => !operations.has(o));
  assert(unknown.length === 0, `steps for operations the spec no longer has: ${unknown.join(", ")}`);
  const unsent = [...operations].filter(([, [m, p]]) => !sent.some(([sm, sp]) => sm === m && p.test(sp))).map(([o]) => o);
  assert(unsent.length === 0, `operations never sent: ${unsent.join(", ")}`);
  console.log(`${NAME}: every operation of the spec called (${operations.size}), ${sent.length} requests`);
}

try {
  await main();
} catch (err) {
  console.log(err instanceof Error ? (err.stack ?? err.message) : String(err));
  console.log(`${NAME}: ${passed.length} passed, 1 failed`);
  process.exit(1);
}
console.log(`${NAME}: ${passed.length} passed, 0 failed`);
