// Drives a live leadlex through TypeScript types generated from openapi/leadlex.json
// (openapi-typescript) and openapi-fetch: a typed 200, typed 402 and 404 errors, the
// rate-limit headers. Type-checked with `tsc --noEmit` before it runs.
//
// Environment: LEADLEX_URL, LEADLEX_KEY (funded), LEADLEX_BROKE_KEY (balance 0).

import createClient from "openapi-fetch";
import type { components, paths } from "./generated/leadlex";

type ErrorBody = components["schemas"]["ErrorBody"];
type Enriched = components["schemas"]["EnrichResponse"];
type EnrichRequest = components["schemas"]["EnrichRequest"];

// The contract makes the generated types refuse a body with neither `email` nor
// `domain` at compile time (tsc fails if this line ever type-checks), and accept each
// documented shape.
// @ts-expect-error: neither `email` nor `domain`
const neither: EnrichRequest = { include: ["company"] };
const shapes: EnrichRequest[] = [{ email: "jane@acme.com" }, { domain: "acme.com" }, { email: "jane@gmail.com", domain: "acme.com" }];
void neither;
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

console.log(`typescript client: ${passed} passed, 0 failed`);
