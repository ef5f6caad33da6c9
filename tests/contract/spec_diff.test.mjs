// The breaking-change gate catches what it is there for: each case changes a copy of the
// released contract the way a careless commit would, and asks the gate (spec_diff.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { check, newestRelease, changelogBlock, withBlock, BEGIN, END } from "./spec_diff.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const release = newestRelease(path.join(root, "openapi/released"));
const released = JSON.parse(fs.readFileSync(release.file, "utf8"));
const copy = () => structuredClone(released);
const [major, minor, patch] = released.info.version.split(".").map(Number);

test("the committed contract passes against the newest release", () => {
  const current = JSON.parse(fs.readFileSync(path.join(root, "openapi/leadlex.json"), "utf8"));
  assert.deepEqual(check(released, current).problems, []);
});

test("removing a response field is breaking and fails the gate", () => {
  const next = copy();
  const data = next.components.schemas.EnrichData;
  delete data.properties.credits_remaining;
  data.required = data.required.filter((r) => r !== "credits_remaining");
  next.info.version = `${major}.${minor}.${patch + 1}`;
  const { breaking, problems } = check(released, next);
  assert.equal(problems.length, 1);
  assert.match(problems[0], /breaking change/);
  assert.ok(breaking.some((d) => /credits_remaining/.test(d.description)), JSON.stringify(breaking));
});

test("making an optional request field required is breaking and fails the gate", () => {
  const next = copy();
  (next.components.schemas.EnrichByEmail ?? next.components.schemas.EnrichRequest).required ??= [];
  (next.components.schemas.EnrichByEmail ?? next.components.schemas.EnrichRequest).required.push("include");
  next.info.version = `${major}.${minor}.${patch + 1}`;
  const { breaking, problems } = check(released, next);
  assert.equal(problems.length, 1);
  assert.ok(breaking.some((d) => /include/.test(d.description ?? "")), JSON.stringify(breaking));
});

test("removing an operation's declared status is breaking", () => {
  const next = copy();
  delete next.paths["/v1/email/enrich"].post.responses["402"];
  assert.equal(check(released, next).problems.length, 1);
});

test("a major version bump lets a breaking change through, and lists it", () => {
  const next = copy();
  delete next.components.schemas.EnrichData.properties.credits_remaining;
  next.info.version = `${major + 1}.0.0`;
  const { listed, problems } = check(released, next);
  assert.deepEqual(problems, []);
  assert.ok(listed.some((l) => l.startsWith("- breaking: POST /v1/email/enrich") && /credits_remaining/.test(l)), listed.join("\n"));
});

test("while the contract is 0.x, a minor bump lets a breaking change through (semver), a patch bump does not", () => {
  const was = copy();
  was.info.version = "0.3.1";
  const next = structuredClone(was);
  delete next.components.schemas.EnrichData.properties.credits_remaining;
  next.info.version = "0.4.0";
  assert.deepEqual(check(was, next).problems, []);
  assert.ok(check(was, next).listed.some((l) => l.startsWith("- breaking:") && /credits_remaining/.test(l)));
  next.info.version = "0.3.2";
  assert.equal(check(was, next).problems.length, 1);
});

test("from 1.0 on, a minor bump does not let a breaking change through", () => {
  const was = copy();
  was.info.version = "1.2.0";
  const next = structuredClone(was);
  delete next.components.schemas.EnrichData.properties.credits_remaining;
  next.info.version = "1.3.0";
  assert.equal(check(was, next).problems.length, 1);
  next.info.version = "2.0.0";
  assert.deepEqual(check(was, next).problems, []);
});

test("an additive change passes and is listed for the changelog", () => {
  const next = copy();
  next.components.schemas.EnrichData.properties.fetched_later = { type: "string", format: "date-time" };
  next.info.version = `${major}.${minor + 1}.0`;
  const { listed, problems } = check(released, next);
  assert.deepEqual(problems, []);
  // Once per operation that shows it (EnrichData is in the single, bulk and job answers).
  const lines = listed.filter((l) => /fetched_later/.test(l));
  assert.ok(lines.length >= 1 && lines.every((l) => l.startsWith("- non-breaking: ")), listed.join("\n"));
  assert.equal(lines.filter((l) => l.startsWith("- non-breaking: POST /v1/email/enrich: ")).length, 1, lines.join("\n"));
});

test("the version never goes backwards", () => {
  const next = copy();
  next.info.version = "0.0.1";
  if (major === 0 && minor === 0 && patch <= 1) next.info.version = "0.0.0";
  assert.match(check(released, next).problems.join(), /older than the released/);
});

test("the changelog block is replaced between its markers, and nothing else", () => {
  const text = `# Changelog\n\nprose\n\n${BEGIN}\nold\n${END}\n\n## 0.1.0\n`;
  const out = withBlock(text, changelogBlock("0.1.0", ["- non-breaking: X"]));
  assert.ok(out.startsWith("# Changelog\n\nprose\n\n"));
  assert.ok(out.endsWith(`${END}\n\n## 0.1.0\n`));
  assert.match(out, /- non-breaking: X/);
  assert.doesNotMatch(out, /\nold\n/);
});

test("a new tag is additive; renaming a tag is breaking (it renames generated client modules)", () => {
  const added = copy();
  added.tags.push({ name: "Jobs", description: "Asynchronous enrichment jobs." });
  assert.deepEqual(check(released, added).problems, []);
  const renamed = copy();
  renamed.tags[0].name = "Lookups";
  assert.equal(check(released, renamed).problems.length, 1);
});

test("a changed example is an annotation: it passes and is not listed", () => {
  const next = copy();
  const media = Object.values(next.paths["/v1/email/enrich"].post.responses["200"].content)[0];
  const example = Object.values(media.examples)[0];
  example.value.data.confidence = 0.5;
  example.summary = "another summary";
  const { listed, problems } = check(released, next);
  assert.deepEqual(problems, []);
  assert.deepEqual(listed, []);
});

test("a change to the security scheme is reported, though no operation inlines it", () => {
  const next = copy();
  next.components.securitySchemes.ApiKeyAuth.scheme = "basic";
  const { breaking, listed } = check(released, next);
  assert.ok(breaking.length > 0 || listed.some((l) => /securitySchemes/.test(l)), JSON.stringify(listed));
});
