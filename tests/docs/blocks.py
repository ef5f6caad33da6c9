#!/usr/bin/env python3
"""Runs the fenced code blocks of the docs, in order, as a newcomer would paste them.

Called by tests/docs/run (which installs the tools, puts them on PATH and enters a
network namespace with loopback only); `blocks.py list FILE…` prints the blocks and what
would be done with each, without running anything.

Per file: a scratch directory of its own, a fresh `leadlex serve --demo` on
127.0.0.1:8080 (its own SQLite file in that directory) unless the file starts one itself
in a `background` block; its key and address are exported as LEADLEX_KEY and
LEADLEX_URL. The blocks then run in order; the first failure ends the file.

By language:
  sh, bash, shell, console   bash, `set -euo pipefail`; one shell session per file: the
                             variables, functions and working directory a block leaves
                             are there for the next (as in one terminal); `console`
                             runs its `$ ` lines. `curl` fails on an HTTP error status
                             (--fail-with-body is added) unless the command prints the
                             status itself (-w/--write-out).
  python                     python (stdin; the scratch directory on sys.path), of a
                             venv of the doc's own that sees the contract venv's packages
  ts, typescript / js        tsx / node, from the scratch directory
  json                       must parse
  toml                       must parse (tomllib); a leadlex configuration (its tables
                             all sections of one) must also validate against
                             openapi/config.schema.json
  yaml                       must parse (js-yaml)
  text, output, none         not code: reported, nothing to run
A code block whose first line is a comment naming a file of its language
(`// src/first-call.ts`, `# receiver.py`) is saved there, not run: a later block of the
doc runs it, as the doc tells its reader to.

Markers, on the line(s) just above a fence, one HTML comment each:
  <!-- docs-run: skip (why: …) -->          not run; the reason is printed
  <!-- docs-run: background [HOST:PORT] --> started in the background, waited for until
                                            HOST:PORT (default 127.0.0.1:8080) accepts
                                            connections (and /healthz answers 200 on
                                            8080), stopped when the file is done
  <!-- docs-run: expect-fail (why: …) -->   must exit non-zero
  <!-- docs-run: output -->                 (a text block) the previous block's stdout,
                                            exactly
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SHELL = {"sh", "bash", "shell", "console"}
PYTHON = {"python", "py", "python3"}
TS = {"ts", "typescript", "mts"}
JS = {"js", "javascript", "mjs"}
NOT_CODE = {"", "text", "txt", "output", "plaintext"}
SAVE_EXT = {"sh": SHELL, "bash": SHELL, "py": PYTHON, "ts": TS, "mts": TS, "js": JS, "mjs": JS}
SERVER = ("127.0.0.1", 8080)
BLOCK_TIMEOUT = 120
MARKER = re.compile(r"^\s*<!--\s*docs-run:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    path: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    markers: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def marker(self, name: str) -> str | None:
        for m in self.markers:
            if m == name or m.startswith(name + " "):
                return m[len(name):].strip()
        return None

    def reason(self, name: str) -> str:
        m = re.fullmatch(r"\(why: (.+)\)", self.marker(name) or "")
        if not m:
            raise SystemExit(f"{self.where()}: `{name}` needs a reason: <!-- docs-run: {name} (why: …) -->")
        return m.group(1)

    def saved_as(self) -> str | None:
        first = self.text.split("\n", 1)[0]
        m = re.match(r"^(?://|#)\s*([\w./-]+\.(\w+))\b", first)
        if m and self.lang in SAVE_EXT.get(m.group(2), ()):
            return m.group(1)
        return None


def extract(path: Path, name: str) -> list[Block]:
    lines = path.read_text().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        markers, j = [], i - 1
        while j >= 0 and re.match(r"^\s*<!--.*-->\s*$", lines[j]):
            if mm := MARKER.match(lines[j]):
                markers.insert(0, mm.group(1))
            j -= 1
        body, k = [], i + 1
        while k < len(lines) and not re.match(rf"^\s*{fence[0]}{{{len(fence)},}}\s*$", lines[k]):
            body.append(lines[k][len(indent):] if lines[k].startswith(indent) else lines[k])
            k += 1
        if k == len(lines):
            raise SystemExit(f"{name}:{i + 1}: a fence that is never closed")
        blocks.append(Block(name, i + 1, lang, "\n".join(body) + "\n", markers))
        i = k + 1
    for b in blocks:
        for m in b.markers:
            if m.split(" ", 1)[0] not in {"skip", "background", "expect-fail", "output"}:
                raise SystemExit(f"{b.where()}: unknown marker `docs-run: {m}`")
        if b.marker("skip") is not None:
            b.reason("skip")
        if b.marker("expect-fail") is not None:
            b.reason("expect-fail")
    return blocks


def plan(b: Block) -> str:
    if b.marker("skip") is not None:
        return "skip"
    if b.marker("output") is not None:
        return "output"
    if b.saved_as():
        return "save"
    if b.lang in SHELL:
        return "background" if b.marker("background") is not None else "shell"
    if b.lang in PYTHON | TS | JS:
        return "run"
    if b.lang in {"json", "toml", "yaml", "yml"}:
        return "syntax"
    if b.lang in NOT_CODE:
        return "text"
    raise SystemExit(f"{b.where()}: no runner for a `{b.lang}` block: give it "
                     "<!-- docs-run: skip (why: …) --> if it cannot run")


# ---------------------------------------------------------------------------- running

PRELUDE = r"""
set -euo pipefail
curl() {
  local a
  for a in "$@"; do
    case "$a" in -w|--write-out|--write-out=*) command curl "$@"; return;; esac
  done
  command curl --fail-with-body --show-error "$@"
}
__docs_save() {
  local v d
  {
    for v in $(compgen -v); do
      case "$v" in
        BASH*|EUID|PPID|SHELLOPTS|UID|FUNCNAME|GROUPS|PIPESTATUS|_|RANDOM|SRANDOM|SECONDS|\
        LINENO|HISTCMD|EPOCH*|DIRSTACK|OPTIND|OPTARG|OPTERR|PWD|OLDPWD|SHLVL|COMP_*|__docs*) continue;;
      esac
      d=$(declare -p "$v" 2>/dev/null) || continue
      [[ "$d" =~ ^declare\ -[a-zA-Z]*r ]] && continue
      [[ $'\n'"$__docs_env"$'\n' == *$'\n'"$d"$'\n'* ]] && continue  # as the harness set it
      printf '%s\n' "$d"
    done
    declare -f
    printf 'cd %q\n' "$PWD"
  } > "$__DOCS_STATE.new" && mv "$__DOCS_STATE.new" "$__DOCS_STATE"
}
__docs_env=$(export -p)
[ -f "$__DOCS_STATE" ] && source "$__DOCS_STATE"
set -euo pipefail
"""


def log(msg: str) -> None:
    print(msg, flush=True)


def tail(text: str, n: int = 40) -> str:
    lines = text.rstrip("\n").split("\n")
    cut = lines[-n:]
    return ("    …\n" if len(lines) > n else "") + "\n".join("    " + l for l in cut)


def wait_for(host: str, port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before {host}:{port} accepted connections")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            if (host, port) == SERVER:
                with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as r:
                    if r.status != 200:
                        raise OSError(r.status)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{host}:{port} did not accept connections within {timeout:.0f} s")


class Doc:
    def __init__(self, name: str, blocks: list[Block], scratch: Path, env: dict[str, str]):
        self.name, self.blocks, self.dir = name, blocks, scratch
        self.env = dict(env)
        self.state = scratch / ".docs-run" / "state.sh"
        self.background: list[tuple[Block, subprocess.Popen]] = []
        self.last_stdout: str | None = None
        self.results: list[tuple[Block, str, str]] = []  # block, outcome, note
        (scratch / ".docs-run").mkdir(parents=True)
        self.env["__DOCS_STATE"] = str(self.state)
        # What the docs' `npm install` lines (skipped: no registry here) would have made:
        # the same packages, pinned, from tests/contract.
        (scratch / "node_modules").symlink_to(Path(env["__DOCS_TOOLS"]) / "node_modules")
        # A Python of the doc's own, first on PATH: it sees the contract venv's packages
        # (a .pth file), so `pip install` of one of them is satisfied, and whatever a doc
        # installs (`pip install ./generated-client`) goes here, never into that venv.
        venv = scratch / ".venv"
        subprocess.run([env["__DOCS_VENV"] + "/bin/python", "-m", "venv", "--without-pip", str(venv)], check=True)
        site = subprocess.run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "leadlex-docs-tools.pth").write_text(env["__DOCS_SITE"] + "\n")
        (venv / "bin/pip").write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
        (venv / "bin/pip").chmod(0o755)
        self.python = str(venv / "bin/python")
        self.env["PATH"] = f"{venv}/bin:{self.env['PATH']}"
        self.env["VIRTUAL_ENV"] = str(venv)

    def script(self, b: Block) -> Path:
        text = b.text
        if b.lang == "console":
            text = "".join(l[2:] + "\n" for l in text.split("\n") if l.startswith("$ "))
        # The one substitution: the README's `cargo run --release --` is the built binary.
        text = text.replace("cargo run --release -- ", 'leadlex ')
        p = self.dir / ".docs-run" / f"{b.line}.{b.lang or 'txt'}"
        p.write_text(text)
        return p

    def start(self, b: Block, cmd: list[str], wait: tuple[str, int]) -> str:
        out = open(self.dir / ".docs-run" / f"{b.line}.out", "w")
        err = open(self.dir / ".docs-run" / f"{b.line}.err", "w")
        proc = subprocess.Popen(cmd, cwd=self.dir, env=self.env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.background.append((b, proc))
        try:
            wait_for(*wait, proc)
        except RuntimeError as e:
            raise BlockFailed(f"{e}\n  stdout:\n{tail(self.read(b, 'out'))}\n  stderr:\n{tail(self.read(b, 'err'))}")
        if wait == SERVER:
            self.env["LEADLEX_URL"] = "http://%s:%d" % SERVER
            deadline = time.monotonic() + 10
            while not (m := re.search(r"API key:\s*(wbk_\S+)", self.read(b, "out"))):
                if time.monotonic() > deadline:
                    raise BlockFailed("serve answers /healthz but printed no `API key:` line:\n"
                                      + tail(self.read(b, "out")))
                time.sleep(0.05)
            self.env["LEADLEX_KEY"] = m.group(1)
            return f"ready on {self.env['LEADLEX_URL']}, key in LEADLEX_KEY"
        return "ready on %s:%d" % wait

    def read(self, b: Block, what: str) -> str:
        return (self.dir / ".docs-run" / f"{b.line}.{what}").read_text(errors="replace")

    def run_fg(self, b: Block, cmd: list[str], stdin: Path | None = None) -> subprocess.CompletedProcess:
        with open(stdin) if stdin else open(os.devnull) as fin:
            proc = subprocess.Popen(cmd, cwd=self.dir, env=self.env, stdin=fin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
            try:
                out, err = proc.communicate(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the block's processes, all of them
                out, err = proc.communicate()
                raise BlockFailed(f"still running after {BLOCK_TIMEOUT} s\n  stdout:\n{tail(out)}\n  stderr:\n{tail(err)}")
            finally:
                try:  # whatever the block left running (its process group)
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def execute(self, b: Block, what: str) -> str:
        tools = self.env["__DOCS_TOOLS"]
        if what == "background":
            p = self.script(b)
            addr = b.marker("background") or "%s:%d" % SERVER
            host, port = addr.rsplit(":", 1)
            runner = self.dir / ".docs-run" / f"{b.line}.runner.sh"
            runner.write_text(PRELUDE + f"\nsource {shlex.quote(str(p))}\n")
            return self.start(b, ["bash", str(runner)], (host, int(port)))
        if what == "shell":
            p = self.script(b)
            runner = self.dir / ".docs-run" / f"{b.line}.runner.sh"
            runner.write_text(PRELUDE + f"\ntrap __docs_save EXIT\nsource {shlex.quote(str(p))}\n")
            r = self.run_fg(b, ["bash", str(runner)])
        elif what == "run" and b.lang in PYTHON:
            r = self.run_fg(b, [self.python, "-"], stdin=self.script(b))
        elif what == "run":
            ext = "mts" if b.lang in TS else "mjs"
            p = self.dir / f".docs-run-{b.line}.{ext}"  # beside the doc's files, for relative imports
            p.write_text(b.text)
            r = self.run_fg(b, [f"{tools}/node_modules/.bin/tsx" if b.lang in TS else "node", str(p)])
            p.unlink()
        elif what == "save":
            dest = self.dir / b.saved_as()
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(b.text)
            return f"saved as {b.saved_as()}"
        elif what == "syntax":
            return self.syntax(b)
        elif what == "output":
            if self.last_stdout is None:
                raise BlockFailed("an output block with no block run before it")
            if self.last_stdout != b.text:
                raise BlockFailed(f"the previous block printed:\n{tail(self.last_stdout)}\n  the doc says:\n{tail(b.text)}")
            return "matches the previous block's output"
        else:
            raise AssertionError(what)
        self.last_stdout = r.stdout
        (self.dir / ".docs-run" / f"{b.line}.out").write_text(r.stdout)
        (self.dir / ".docs-run" / f"{b.line}.err").write_text(r.stderr)
        expect_fail = b.marker("expect-fail") is not None
        if (r.returncode != 0) != expect_fail:
            raise BlockFailed(f"exit status {r.returncode}{' (expected a failure)' if expect_fail else ''}\n"
                              f"  stdout:\n{tail(r.stdout)}\n  stderr:\n{tail(r.stderr)}")
        return f"exit {r.returncode}"

    def syntax(self, b: Block) -> str:
        try:
            if b.lang == "json":
                json.loads(b.text)
                return "parses"
            if b.lang == "toml":
                doc = tomllib.loads(b.text)
                schema = self.env["__DOCS_ROOT"] + "/openapi/config.schema.json"
                known = set(json.load(open(schema)).get("properties", {}))
                if not set(doc) <= known:
                    return "parses (not a leadlex configuration)"
                r = subprocess.run([self.python, "-c", VALIDATE_CONFIG, schema],
                                   input=json.dumps(doc), capture_output=True, text=True, timeout=60)
                if r.returncode != 0:
                    raise BlockFailed("not a valid configuration (openapi/config.schema.json):\n"
                                      + tail(r.stdout + r.stderr))
                return "parses, valid against openapi/config.schema.json"
            # yaml
            r = subprocess.run(["node", "-e", "require('js-yaml').load(require('fs').readFileSync(0, 'utf8'))"],
                               input=b.text, capture_output=True, text=True, timeout=60,
                               cwd=self.env["__DOCS_TOOLS"])
            if r.returncode != 0:
                raise BlockFailed("not YAML:\n" + tail(r.stderr))
            return "parses"
        except (ValueError, tomllib.TOMLDecodeError) as e:
            raise BlockFailed(f"does not parse as {b.lang}: {e}")

    def run(self) -> bool:
        own_server = not any(plan(b) == "background" and (b.marker("background") or "%s:%d" % SERVER) == "%s:%d" % SERVER
                             for b in self.blocks)
        ok = True
        try:
            if own_server:
                t = time.monotonic()
                self.dir.joinpath(".docs-run", "server.sh").write_text("exec leadlex serve --demo\n")
                server = Block(self.name, 0, "sh", "")
                note = self.start(server, ["bash", str(self.dir / ".docs-run" / "server.sh")], SERVER)
                log(f"  {self.name}: the harness's `leadlex serve --demo`: {note} ({time.monotonic() - t:.1f} s)")
            for b in self.blocks:
                what = plan(b)
                label = f"  {b.where():<24} {b.lang or '(none)':<7} {what:<10}"
                if what == "skip":
                    self.results.append((b, "skip", b.reason("skip")))
                    log(f"{label} SKIP: {b.reason('skip')}")
                    continue
                if what == "text":
                    self.results.append((b, "text", ""))
                    log(f"{label} (not code)")
                    continue
                t = time.monotonic()
                try:
                    note = self.execute(b, what)
                except BlockFailed as e:
                    self.results.append((b, "FAIL", str(e)))
                    log(f"{label} FAIL ({time.monotonic() - t:.1f} s): {e}")
                    log(f"  {self.name}: the blocks after {b.where()} were not run")
                    ok = False
                    break
                self.results.append((b, "ok", note))
                log(f"{label} ok ({time.monotonic() - t:.1f} s) {note}")
        except BlockFailed as e:
            log(f"  {self.name}: FAIL: {e}")
            ok = False
        finally:
            self.stop()
        return ok

    def stop(self) -> None:
        for b, proc in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    log(f"  {b.where()}: did not stop within 15 s of SIGTERM: killed")


class BlockFailed(Exception):
    pass


VALIDATE_CONFIG = """
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
errors = list(jsonschema.Draft7Validator(schema).iter_errors(json.load(sys.stdin)))
for e in errors:
    print("/".join(map(str, e.absolute_path)) or "(top)", ":", e.message)
sys.exit(1 if errors else 0)
"""


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in {"list", "run"}:
        raise SystemExit("usage: blocks.py list|run FILE…")
    root = Path(__file__).resolve().parents[2]
    docs = [(f, extract(root / f, f)) for f in sys.argv[2:]]
    if sys.argv[1] == "list":
        for f, blocks in docs:
            for b in blocks:
                extra = b.reason("skip") if plan(b) == "skip" else (b.saved_as() or b.marker("background") or "")
                print(f"{b.where():<24} {b.lang or '(none)':<7} {plan(b):<10} {extra}")
        return
    out = Path(os.environ["DOCS_OUT"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADLEX_", "DOCS_"))}
    env |= {"__DOCS_ROOT": str(root), "__DOCS_TOOLS": os.environ["DOCS_TOOLS"],
            "__DOCS_VENV": os.environ["DOCS_VENV"], "__DOCS_SITE": os.environ["DOCS_SITE"]}
    started, failed, summary = time.monotonic(), [], []
    for f, blocks in docs:
        name = Path(f).stem
        log(f"== {f}")
        t = time.monotonic()
        doc = Doc(f, blocks, out / name, env)
        if not doc.run():
            failed.append(f)
        summary.append((f, doc.results, time.monotonic() - t))
    log("== summary")
    for f, results, took in summary:
        counts = {k: sum(1 for r in results if r[1] == k) for k in ("ok", "skip", "text", "FAIL")}
        log(f"  {f}: {counts['ok']} ran or checked, {counts['skip']} skipped, {counts['text']} not code"
            f"{', ' + str(counts['FAIL']) + ' FAILED' if counts['FAIL'] else ''} ({took:.1f} s)")
        for b, outcome, note in results:
            if outcome == "skip":
                log(f"    skipped {b.where()}: {note}")
    log(f"docs: {len(docs) - len(failed)} of {len(docs)} files passed in {time.monotonic() - started:.1f} s"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
