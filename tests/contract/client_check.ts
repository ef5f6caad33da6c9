// Drives a live leadlex through TypeScript types generated from openapi/leadlex.json
// (openapi-typescript) and openapi-fetch: a typed 200, typed 402 and 404 errors, the
// rate-limit headers; a test-mode key created through the API and every documented
// trigger of docs/testing.md. Type-checked with `tsc --noEmit` before it runs.
//
// Environment: LEADLEX_URL, LEADLEX_KEY (funded), LEADLEX_BROKE_KEY (balance 0).

import createClient from "openapi-fetch";
import type { components, paths } from "./generated/leadlex";

type ErrorBody = components["schemas"]["ErrorBody"];
type Enriched = components["schemas"]["EnrichResponse"];
type EnrichRequest = components["schemas"]["EnrichRequest"];

// The generated type accepts each documented shape. (Since 0.2 the body is one object
// whose "email or domain" rule openapi-typescript does not turn into a type: a body
// with neither compiles, and the server answers it `400` naming the fields; see
// docs/design.md, "Request schemas", for why this shape.)
const shapes: EnrichRequest[] = [{ email: "jane@acme.com" }, { domain: "acme.com" }, { email: "jane@gmail.com", domain: "acme.com" }];
void shapes;

const baseUrl = process.env.LEADLEX_URL!;
const api = (key: string) => createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

let passed = 0;
async function check(name: string, fn: () => Promise<void>) {
  await fn();
  passed += 1;
  console.log(`typescript client: ${name}: ok`);
}

await check("200 with typed fields and rate-limit headers", async () => {
  const { data, response } = await api(process.env.LEADLEX_KEY!).POST("/v1/email/enrich", {
    body: { email: "jane@acme.com" },
  });
  assert(response.status === 200, `status ${response.status}`);
  const ok: Enriched | undefined = data;
  assert(ok, "body parsed");
  const fullName: string | undefined = ok.data.person?.full_name;
  assert(fullName === "Jane Doe", `full_name ${fullName}`);
  const source: "vendor_a" | "vendor_b" | "cached" = ok.data.source;
  assert(source === "vendor_a" || source === "cached", `source ${source}`);
  const credits: number = ok.data.credits_remaining;
  assert(Number.isInteger(credits) && credits >= 0, "credits_remaining");
  const limit = Number(response.headers.get("X-RateLimit-Limit"));
  const remaining = Number(response.headers.get("X-RateLimit-Remaining"));
  const reset = Number(response.headers.get("X-RateLimit-Reset"));
  assert(Number.isInteger(limit) && remaining <= limit && reset % 86400 === 0, "rate-limit headers");
});

await check("a bulk call: a typed result per item, a summary", async () => {
  const { data, response } = await api(process.env.LEADLEX_KEY!).POST("/v1/email/enrich/bulk", {
    body: { items: [{ email: "jane@acme.com", reference: "crm-1" }, { email: "not-an-email", reference: "crm-2" }] },
  });
  assert(response.status === 200 && data, `status ${response.status}`);
  const [ok, bad] = data.data.results;
  assert(ok.status === 200 && ok.reference === "crm-1" && ok.data?.person?.full_name === "Jane Doe", "the first item");
  assert(bad.status === 400 && bad.error?.code === "validation_error", "the malformed item fails alone");
  assert(data.data.summary.credits_charged === 1 && data.data.credits_remaining === ok.data?.credits_remaining, "summary");
});

await check("typed 402 insufficient_credits", async () => {
  const { error, response } = await api(process.env.LEADLEX_BROKE_KEY!).POST("/v1/email/enrich", {
    body: { email: "jane@acme.com" },
  });
  assert(response.status === 402, `status ${response.status}`);
  const err: ErrorBody | undefined = error;
  assert(err?.error.code === "insufficient_credits", `code ${err?.error.code}`);
  assert(err.error.request_id === response.headers.get("X-Request-ID"), "request_id");
});

await check("typed 404 no_match", async () => {
  const { error, response } = await api(process.env.LEADLEX_KEY!).POST("/v1/email/enrich", {
    body: { domain: "nobody.invalid", include: ["company"] },
  });
  assert(response.status === 404, `status ${response.status}`);
  const err: ErrorBody | undefined = error;
  assert(err?.error.code === "no_match", `code ${err?.error.code}`);
});

await check("a test-mode key and every trigger: 200 vendor_a, vendor_b, cached, 404, 402, 503, 409, 422, 429", async () => {
  const admin = api(process.env.LEADLEX_KEY!);
  const made = await admin.POST("/v1/api-keys", { body: { name: "typescript ci", permissions: ["write:enrich"], mode: "test" } });
  assert(made.response.status === 201 && made.data?.data.mode === "test", `create ${made.response.status}`);
  const secret: string = made.data.data.key;
  assert(secret.startsWith("wbk_test_"), "a test key");
  const test = api(secret);
  const usage = await admin.GET("/v1/usage");
  const balance = usage.data!.data.credits.balance;
  const tag = crypto.randomUUID().replaceAll("-", "");
  const enrich = (trigger: string, idem?: string) =>
    test.POST("/v1/email/enrich", {
      body: { email: `${trigger}+${tag}@leadlex.test` },
      params: { header: idem ? { "Idempotency-Key": idem } : {} },
    });

  for (const [trigger, source] of [["vendor_a", "vendor_a"], ["vendor_b", "vendor_b"]] as const) {
    const first = await enrich(trigger);
    assert(first.response.status === 200 && first.data?.data.source === source, `${trigger}: ${first.response.status}`);
    assert(first.data.data.credits_remaining === balance, "never charged");
    const again = await enrich(trigger);
    assert(again.data?.data.source === "cached", `${trigger} again: ${again.data?.data.source}`);
  }
  for (const [trigger, status, code] of [
    ["no_match", 404, "no_match"],
    ["insufficient_credits", 402, "insufficient_credits"],
    ["upstream_unavailable", 503, "upstream_unavailable"],
  ] as const) {
    const { error, response } = await enrich(trigger);
    const err: ErrorBody | undefined = error;
    assert(response.status === status && err?.error.code === code, `${trigger}: ${response.status} ${err?.error.code}`);
  }
  const idem = crypto.randomUUID();
  const [slow, inFlight] = await Promise.all([
    enrich("slow", idem),
    new Promise((r) => setTimeout(r, 300)).then(() => enrich("slow", idem)),
  ]);
  assert(slow.response.status === 200, `slow: ${slow.response.status}`);
  assert(inFlight.response.status === 409 && inFlight.error?.error.code === "idempotency_key_in_use", `in flight: ${inFlight.response.status}`);
  const reused = await enrich("vendor_a", idem);
  assert(reused.response.status === 422 && reused.error?.error.code === "idempotency_key_reused", `reused: ${reused.response.status}`);
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) statuses.push((await enrich("vendor_a")).response.status);
  assert(statuses[statuses.length - 1] === 429, `the eleventh call within a minute is limited: ${statuses}`);
  const after = await admin.GET("/v1/usage");
  assert(after.data!.data.credits.balance === balance, "the balance did not move");
});

console.log(`typescript client: ${passed} passed, 0 failed`);
