#!/usr/bin/env python3
"""What the gateway costs per request, against the bare HTTP stack, in one run.

Starts the release build of `leadlex serve` on SQLite, then on PostgreSQL, and drives it
with wrk on loopback. Scenarios (each reported as req/s, p50, p99, p99.9 and the
server's peak RSS, with its ratio to the baseline measured in the same run):

  1. baseline      GET /healthz (no database)
  2. cached        enrich of an input already in the cache (auth, rate limit, durable
                   debit, ledger, cache read)
  3. replay        idempotent replay of a stored response
  4. miss          sandbox vendors answering after 20 ms: the gateway's added latency
                   (its p50 minus the p50 of the vendor alone, "vendor", measured with
                   the same connections in the same run). Every input is new and known
                   to the first vendor, so each lookup is exactly one vendor call and
                   the difference is the gateway's own cost
  5. 401 / 402     an unknown key; a workspace at balance 0
  6. ledger-first / ledger-deep   the first page of the credit ledger, and its oldest
                   page (by cursor): with the cursor a seek, both cost the same

then the same with 1 million keys and 1 million cache rows in the database. Each
scenario's ratio is to a baseline measured just before it at the same connection count
(the standalone baseline rows show the drift within the run).
Usage: scripts/bench [--quick] [--backends sqlite,postgres] [--out FILE]
       scripts/bench --against OTHER_LEADLEX_BINARY [--scenarios cached,replay,402]
                     [--scales small,large] [--conns 64] [--rounds 4] [--backends sqlite]
(A/B mode: this build against another binary, alternating, same session.)
(BENCH_DATABASE_SETTINGS="key = value;…" adds settings to the server's [database] table;
BENCH_SERVER_STDERR=1 shows the server's log.)
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "bench.d"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
LEADLEX = TARGET / "release" / "leadlex"
VENDOR_LATENCY_MS = 20
PG = os.environ.get("LEADLEX_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(db, *args, binary=LEADLEX):
    out = subprocess.run([str(binary), "--database-url", db, "--json", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def psql(db, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", db, "-c", sql], check=True, capture_output=True)


def sqlite(path, sql):
    import sqlite3

    con = sqlite3.connect(path)
    con.executescript(sql)
    con.commit()
    con.close()


class Sandbox:
    """The sandbox vendors as a process of their own, so that their latency can be
    measured directly and subtracted from the miss scenario's."""

    def __init__(self):
        port = free_port()
        self.proc = subprocess.Popen(
            [str(LEADLEX), "sandbox", "--bind", f"127.0.0.1:{port}", "--latency-ms", str(VENDOR_LATENCY_MS)],
            env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Server:
    def __init__(self, db, workdir, sandbox, binary=LEADLEX):
        self.db = db
        config = Path(workdir) / f"bench-{uuid.uuid4().hex[:8]}.toml"
        vendors = "".join(
            f'[[vendors]]\nname = "{name}"\nbase_url = "{sandbox.url}/{name}"\napi_key = "sandbox"\n'
            for name in ("vendor_a", "vendor_b")
        )
        extra = os.environ.get("BENCH_DATABASE_SETTINGS", "").replace(";", "\n")
        config.write_text(f"[database]\nmax_connections = 16\n{extra}\n{vendors}")
        port = free_port()
        # A PostgreSQL deployment must configure its seal key (older builds ignore it).
        env = dict(os.environ, LEADLEX_DATABASE_URL=db, LEADLEX_CONFIG=str(config), RUST_LOG="warn",
                   LEADLEX_SEAL_KEY="YmVuY2gtc2VhbC1rZXktMzItYnl0ZXMtbG9uZy1vayE")
        env.pop("LEADLEX_REDIS_URL", None)
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--bind", f"127.0.0.1:{port}"], env=env,
            stdout=subprocess.PIPE, stderr=None if os.environ.get("BENCH_SERVER_STDERR") else subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            raise SystemExit(f"server did not start: {line!r}")
        self.url = match.group(1)

    def peak_rss_mb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def post(url, key, body, idem=None, path="/v1/email/enrich"):
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    if idem:
        req.add_header("Idempotency-Key", idem)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


BULK_ITEMS = 100
JOB_ITEMS = 10_000


def call(url, key, method="GET", body=None, headers=None):
    """An API call; returns (status, JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def job_run(server, keys, args, backend):
    """A 10,000-item job of cached inputs: its items/s (submission to `completed`), and
    how much it costs interactive cached calls. A p99 from a few seconds under a
    saturating load moves by up to 2x with nothing changed, so the cost is measured in
    `args.job_rounds` rounds of three windows: quiet, busy (a fresh 10,000-item job
    running, cancelled after the window), quiet again; each round's ratio is the busy p99
    over the mean of the two quiet ones (the two quiet windows' ratio is the noise
    control). The medians over the rounds are reported."""
    import statistics

    env = {"BENCH_KEY": keys["rich"], "BENCH_BODY": json.dumps({"email": "jane@acme.com"})}
    url = f"{server.url}/v1/email/enrich"
    conns = args.connections[-1]
    items = [{"email": keys["items"][n % len(keys["items"])]} for n in range(JOB_ITEMS)]

    def submit():
        status, body = call(f"{server.url}/v1/enrich/jobs", keys["rich"], "POST", {"items": items})
        assert status == 202, (status, body)
        return body["data"]["id"]

    def job(job_id):
        return call(f"{server.url}/v1/enrich/jobs/{job_id}", keys["rich"])[1]["data"]

    # Items/s of a whole job, with interactive calls for its first window.
    started = time.monotonic()
    first = submit()
    wrk(url, "enrich.lua", env, conns, args.duration)
    while (body := job(first))["status"] != "completed":
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert body["succeeded"] == JOB_ITEMS, body

    rounds = []
    for _ in range(args.job_rounds):
        quiet_a = wrk(url, "enrich.lua", env, conns, args.duration)
        job_id = submit()
        time.sleep(0.3)
        before = job(job_id)["done"]
        busy = wrk(url, "enrich.lua", env, conns, args.duration)
        during = job(job_id)
        running = during["status"] == "running"
        call(f"{server.url}/v1/enrich/jobs/{job_id}/cancel", keys["rich"], "POST")
        time.sleep(1.0)
        quiet_b = wrk(url, "enrich.lua", env, conns, args.duration)
        quiet = (quiet_a["p99_us"] + quiet_b["p99_us"]) / 2
        rounds.append(dict(quiet_p99_us=quiet, busy_p99_us=busy["p99_us"], ratio=busy["p99_us"] / max(quiet, 1),
                           control=quiet_b["p99_us"] / max(quiet_a["p99_us"], 1), running=running,
                           quiet_rps=(quiet_a["rps"] + quiet_b["rps"]) / 2, busy_rps=busy["rps"],
                           busy_items_per_s=(during["done"] - before) / args.duration))
        print(json.dumps(rounds[-1]), file=sys.stderr)
    med = lambda key: statistics.median(r[key] for r in rounds)
    r = dict(backend=backend, connections=conns, items_per_s=JOB_ITEMS / elapsed, seconds=elapsed, rounds=len(rounds),
             quiet_p99_us=med("quiet_p99_us"), busy_p99_us=med("busy_p99_us"), ratio=med("ratio"), control=med("control"),
             rps_ratio=med("busy_rps") / max(med("quiet_rps"), 1), busy_items_per_s=med("busy_items_per_s"),
             running_throughout=all(x["running"] for x in rounds))
    print(json.dumps(r), file=sys.stderr)
    return r


def first_vendor_emails(run_id, count):
    """`count` new emails that the sandbox's `vendor_a` knows: the sandbox puts an input
    in bucket sha256("bucket:" + input)[0] % 10 and vendor_a knows buckets 0-6
    (src/sandbox/data.rs)."""
    import hashlib

    out, n = [], 0
    while len(out) < count:
        n += 1
        email = f"bench.{run_id}.{n}@acme.com"
        if hashlib.sha256(f"bucket:{email}".encode()).digest()[0] % 10 <= 6:
            out.append(email)
    return out


def fresh(env, workdir, seconds):
    """For the miss scenario: a file of emails never asked before (enough for 6k lookups
    a second), new for every wrk run."""
    if "BENCH_KEY" not in env or "BENCH_BODY" in env or "BENCH_EMAILS" in env:
        return env
    emails = Path(workdir) / f"emails-{uuid.uuid4().hex[:8]}.txt"
    emails.write_text("\n".join(first_vendor_emails(emails.stem, 6000 * seconds)) + "\n")
    return dict(env, BENCH_EMAILS=str(emails))


def wrk(url, script, env, connections, seconds):
    threads = 1 if connections == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(HERE / script), url]
    out = subprocess.run(cmd, env=dict(os.environ, BENCH_DIR=str(HERE), **env), check=True, capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def scenarios(server, sandbox, keys):
    body = json.dumps({"email": "jane@acme.com"})
    items = json.dumps({"items": [{"email": e} for e in keys["items"]]})
    return [
        ("baseline", f"{server.url}/healthz", "get.lua", {}),
        ("vendor", f"{sandbox.url}/vendor_a/v5/person/enrich?email=jane%40acme.com", "vendor.lua", {}),
        ("cached", f"{server.url}/v1/email/enrich", "enrich.lua", {"BENCH_KEY": keys["rich"], "BENCH_BODY": body}),
        ("replay", f"{server.url}/v1/email/enrich", "enrich.lua",
         {"BENCH_KEY": keys["rich"], "BENCH_BODY": body, "BENCH_IDEM": keys["idem"]}),
        ("miss", f"{server.url}/v1/email/enrich", "miss.lua", {"BENCH_KEY": keys["rich"]}),
        ("401", f"{server.url}/v1/email/enrich", "enrich.lua",
         {"BENCH_KEY": "wbk_" + "x" * 43, "BENCH_BODY": body}),
        ("402", f"{server.url}/v1/email/enrich", "enrich.lua", {"BENCH_KEY": keys["broke"], "BENCH_BODY": body}),
        ("ledger-first", f"{server.url}/v1/credits/ledger?limit=25", "ledger.lua", {"BENCH_KEY": keys["reader"]}),
        # The rich workspace's oldest entries (its ledger starts at id 1, the first grant).
        ("ledger-deep", f"{server.url}/v1/credits/ledger?limit=25&starting_after=led_100", "ledger.lua",
         {"BENCH_KEY": keys["reader"]}),
        # The same 100 cached inputs, one per call, then all in one bulk call (its items/s
        # is 100 × its req/s).
        ("items-single", f"{server.url}/v1/email/enrich", "miss.lua", {"BENCH_KEY": keys["rich"], "BENCH_EMAILS": keys["items_file"]}),
        ("items-bulk", f"{server.url}/v1/email/enrich/bulk", "enrich.lua", {"BENCH_KEY": keys["rich"], "BENCH_BODY": items}),
    ]


def prepare(db, workdir, binary=LEADLEX):
    """The workspaces and keys a run needs, and the file of bulk items' emails (in
    `workdir`) that the single-call comparison of bulk reads."""
    rich = cli(db, "workspace", "create", "--name", "bench", "--plan", "unmetered", "--credits", "1000000000", binary=binary)["id"]
    broke = cli(db, "workspace", "create", "--name", "bench-broke", "--plan", "unmetered", binary=binary)["id"]
    items = first_vendor_emails("items", BULK_ITEMS)
    fd, path = tempfile.mkstemp(prefix="items-", suffix=".txt", dir=workdir)
    os.close(fd)
    items_file = Path(path)
    items_file.write_text("\n".join(items) + "\n")
    return {
        "rich_ws": rich,
        "rich": cli(db, "key", "create", "--workspace", rich, "--permission", "write:enrich", binary=binary)["key"],
        "reader": cli(db, "key", "create", "--workspace", rich, "--permission", "read:usage", binary=binary)["key"],
        "broke": cli(db, "key", "create", "--workspace", broke, "--permission", "write:enrich", binary=binary)["key"],
        "idem": str(uuid.uuid4()),
        "items": items,
        "items_file": str(items_file),
    }


def grow(backend, db, sqlite_path, workspace, rows):
    """Adds `rows` API keys, `rows` cache entries and `rows` ledger entries (of zero
    credits, so that the books still balance) for the rich workspace, as a large
    deployment has."""
    now = int(time.time() * 1000)
    if backend == "postgres":
        psql(db, f"""
            INSERT INTO api_keys (id, workspace_id, name, prefix, key_hash, permissions, created_at)
            SELECT 'key_bench_' || g, '{workspace}', 'bulk', 'wbk_bulk', md5(g::text) || md5((g+1)::text), 'write:enrich', {now}
            FROM generate_series(1, {rows}) g;
            INSERT INTO enrichment_cache (cache_key, record, vendor, confidence, fetched_at, expires_at, outcome)
            SELECT 'domain:bulk' || g || '.com', '{{"company":{{"name":"Bulk"}}}}', 'vendor_a', 0.9, {now}, {now} + 86400000, 'match'
            FROM generate_series(1, {rows}) g;
            INSERT INTO credit_ledger (workspace_id, delta, balance_after, reason, created_at)
            SELECT '{workspace}', 0, 0, 'grant', {now} FROM generate_series(1, {rows}) g;
            ANALYZE;""")
    else:
        sqlite(sqlite_path, f"""
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows})
            INSERT INTO api_keys (id, workspace_id, name, prefix, key_hash, permissions, created_at)
            SELECT 'key_bench_' || n, '{workspace}', 'bulk', 'wbk_bulk', printf('%064x', n), 'write:enrich', {now} FROM g;
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows})
            INSERT INTO enrichment_cache (cache_key, record, vendor, confidence, fetched_at, expires_at, outcome)
            SELECT 'domain:bulk' || n || '.com', '{{"company":{{"name":"Bulk"}}}}', 'vendor_a', 0.9, {now}, {now} + 86400000, 'match' FROM g;
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows})
            INSERT INTO credit_ledger (workspace_id, delta, balance_after, reason, created_at)
            SELECT '{workspace}', 0, 0, 'grant', {now} FROM g;
            ANALYZE;""")


job_results = []


def run_backend(backend, args, results):
    workdir = tempfile.mkdtemp(prefix="leadlex-bench-")
    db, sqlite_path, cleanup = new_database(backend, workdir)
    sandbox = Sandbox()
    try:
        cli(db, "migrate")
        keys = prepare(db, workdir)
        for scale in ("small", "large"):
            if scale == "large":
                grow(backend, db, sqlite_path, keys["rich_ws"], args.rows)
            server = Server(db, workdir, sandbox)
            try:
                # Warm the cache and the idempotency record the scenarios reuse.
                assert post(server.url, keys["rich"], {"email": "jane@acme.com"}) == 200
                assert post(server.url, keys["rich"], {"email": "jane@acme.com"}, keys["idem"]) == 200
                assert post(server.url, keys["rich"], {"items": [{"email": e} for e in keys["items"]]}, path="/v1/email/enrich/bulk") == 200
                if scale == "small":
                    job_results.append(job_run(server, keys, args, backend))
                for name, url, script, env in scenarios(server, sandbox, keys):
                    for connections in args.connections:
                        # The machine's speed drifts by minutes (shared host): each scenario
                        # is compared with a baseline measured just before it.
                        paired = None
                        if name not in ("baseline", "vendor"):
                            paired = wrk(f"{server.url}/healthz", "get.lua", {}, connections, args.paired)["rps"]
                        wrk(url, script, fresh(env, workdir, args.warmup), connections, args.warmup)
                        r = wrk(url, script, fresh(env, workdir, args.duration), connections, args.duration)
                        r.update(backend=backend, scale=scale, scenario=name, connections=connections,
                                 rss_mb=round(server.peak_rss_mb(), 1), base_rps=paired)
                        results.append(r)
                        print(json.dumps(r), file=sys.stderr)
            finally:
                server.stop()
    finally:
        sandbox.stop()
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def new_database(backend, workdir):
    """A fresh database: (url, sqlite path or None, cleanup)."""
    if backend == "sqlite":
        path = f"{workdir}/bench-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite://{path}", path, lambda: None
    dbname = f"leadlex_bench_{uuid.uuid4().hex[:12]}"
    psql(f"{PG}/postgres", f"CREATE DATABASE {dbname}")
    return f"{PG}/{dbname}", None, lambda: psql(f"{PG}/postgres", f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def compare(args):
    """Same session, same machine: this build (A) against another leadlex binary (B), each
    on its own database prepared the same way, alternating A and B (the order flips every
    round) so that the host's drift falls on both. Each measurement is a ratio to a
    `/healthz` baseline taken just before it on the same server."""
    binaries = {"A": LEADLEX, "B": Path(args.against)}
    rows = []
    for backend in args.backends.split(","):
        workdir = tempfile.mkdtemp(prefix="leadlex-bench-ab-")
        sandbox = Sandbox()
        cleanups = []
        try:
            for scale in args.scales.split(","):
                servers, keys = {}, {}
                try:
                    for name, binary in binaries.items():
                        db, sqlite_path, cleanup = new_database(backend, workdir)
                        cleanups.append(cleanup)
                        cli(db, "migrate", binary=binary)
                        keys[name] = prepare(db, workdir, binary)
                        if scale == "large":
                            grow(backend, db, sqlite_path, keys[name]["rich_ws"], args.rows)
                        servers[name] = Server(db, workdir, sandbox, binary)
                        assert post(servers[name].url, keys[name]["rich"], {"email": "jane@acme.com"}) == 200
                        assert post(servers[name].url, keys[name]["rich"], {"email": "jane@acme.com"}, keys[name]["idem"]) == 200
                    for scenario in args.scenarios.split(","):
                        for connections in args.connections:
                            ratios = {"A": [], "B": []}
                            for round_ in range(args.rounds):
                                for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                                    server = servers[name]
                                    _, url, script, env = next(
                                        s for s in scenarios(server, sandbox, keys[name]) if s[0] == scenario)
                                    base = wrk(f"{server.url}/healthz", "get.lua", {}, connections, args.paired)["rps"]
                                    wrk(url, script, fresh(env, workdir, args.warmup), connections, args.warmup)
                                    r = wrk(url, script, fresh(env, workdir, args.duration), connections, args.duration)
                                    ratios[name].append(r["rps"] / base)
                                    print(json.dumps(dict(r, build=name, backend=backend, scale=scale, scenario=scenario,
                                                          connections=connections, base_rps=base)), file=sys.stderr)
                            rows.append((backend, scale, scenario, connections, ratios))
                finally:
                    for server in servers.values():
                        server.stop()
        finally:
            sandbox.stop()
            for cleanup in cleanups:
                cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
    mean = lambda xs: sum(xs) / len(xs)
    lines = [
        f"A = {LEADLEX}, B = {args.against}; ratios to a paired /healthz baseline, {args.rounds} rounds",
        "",
        "| backend | rows | scenario | conns | A (this build) | B | mean A / mean B |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, scale, scenario, connections, ratios in rows:
        fmt = lambda xs: ", ".join(f"{x:.3f}" for x in sorted(xs))
        lines.append(f"| {backend} | {scale} | {scenario} | {connections} | {fmt(ratios['A'])} | {fmt(ratios['B'])} | "
                     f"{mean(ratios['A']) / mean(ratios['B']):.3f} |")
    return "\n".join(lines)


def table(results):
    base = {(r["backend"], r["scale"], r["connections"]): r for r in results if r["scenario"] == "baseline"}
    small = {(r["backend"], r["scenario"], r["connections"]): r for r in results if r["scale"] == "small"}
    vendor = {(r["backend"], r["scale"], r["connections"]): r for r in results if r["scenario"] == "vendor"}
    lines = [
        "| backend | rows | scenario | conns | req/s | × baseline | p50 ms | p99 ms | p99.9 ms | non-2xx | peak RSS MB | large/small | added p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    def ratio_of(r):
        b = r.get("base_rps") or base[(r["backend"], r["scale"], r["connections"])]["rps"]
        return r["rps"] / b if b else float("nan")

    for r in results:
        ratio = ratio_of(r)
        vs_small = ""
        added = ""
        if r["scenario"] == "miss":
            v = vendor[(r["backend"], r["scale"], r["connections"])]
            added = f"{(r['p50_us'] - v['p50_us']) / 1000:.2f}"
        if r["scale"] == "large":
            s = small[(r["backend"], r["scenario"], r["connections"])]
            s_ratio = ratio_of(s)
            vs_small = f"{ratio / s_ratio:.2f}"
        lines.append(
            f"| {r['backend']} | {r['scale']} | {r['scenario']} | {r['connections']} | {r['rps']:.0f} | {ratio:.2f} | "
            f"{r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['p999_us'] / 1000:.2f} | {r['non2xx']} | "
            f"{r['rss_mb']:.0f} | {vs_small} | {added} |"
        )
    return "\n".join(lines)


def items_table(results):
    """Items per second of a bulk call against single calls, on the same cached inputs."""
    by = {(r["backend"], r["scale"], r["connections"], r["scenario"]): r for r in results}
    lines = ["| backend | rows | conns | items/s single | items/s bulk (100 a call) | bulk / single |", "|---|---|---|---|---|---|"]
    for (backend, scale, conns, scenario), single in by.items():
        if scenario != "items-single":
            continue
        bulk = by[(backend, scale, conns, "items-bulk")]
        bulk_items = bulk["rps"] * BULK_ITEMS
        lines.append(f"| {backend} | {scale} | {conns} | {single['rps']:.0f} | {bulk_items:.0f} | {bulk_items / single['rps']:.1f} |")
    return "\n".join(lines)


def jobs_table(rows):
    lines = [
        "| backend | job items | items/s | rounds | cached p99 ms, no job | p99 ms, job running | running / none (median) "
        "| control: quiet / quiet (median) | req/s running / none | job items/s meanwhile | job ran throughout |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['backend']} | {JOB_ITEMS} | {r['items_per_s']:.0f} | {r['rounds']} | {r['quiet_p99_us'] / 1000:.2f} | "
                     f"{r['busy_p99_us'] / 1000:.2f} | {r['ratio']:.2f} | {r['control']:.2f} | {r['rps_ratio']:.2f} | {r['busy_items_per_s']:.0f} | "
                     f"{r['running_throughout']} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few seconds per scenario, 16 connections, 10k rows")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--against", metavar="BINARY", help="A/B mode: compare this build with another leadlex binary")
    p.add_argument("--scenarios", default="cached,replay,402", help="A/B mode: which scenarios")
    p.add_argument("--scales", default="small", help="A/B mode: small, large or both")
    p.add_argument("--conns", default="64", help="A/B mode: connection counts, comma-separated")
    p.add_argument("--rounds", type=int, default=4, help="A/B mode: measurements per build and scenario")
    args = p.parse_args()
    if args.quick:
        args.connections, args.duration, args.warmup, args.rows, args.paired = [16], 2, 1, 10_000, 1
        args.job_rounds = 2
    else:
        args.connections, args.duration, args.warmup, args.rows, args.paired = [1, 16, 64], 10, 3, 1_000_000, 5
        args.job_rounds = 7
    if not LEADLEX.exists():
        raise SystemExit(f"{LEADLEX} missing: run scripts/bench (it builds release first)")
    if args.against:
        args.connections = [int(c) for c in args.conns.split(",")]
        text = compare(args)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return
    results = []
    for backend in args.backends.split(","):
        run_backend(backend, args, results)
    text = table(results) + "\n\n" + items_table(results) + "\n\n" + jobs_table(job_results)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(f"bench: {len(results)} passed, 0 failed")


if __name__ == "__main__":
    main()
