#!/usr/bin/env bash
# WebSocket conformance: the Autobahn test suite's fuzzing client (autobahntestsuite, which
# runs on Python 2.7 only) against examples/ws_echo, the transport's own RFC 6455 code
# echoing every message. Cases 1-7 and 10; 9 (performance) and 12-13 (permessage-deflate,
# which the transport does not negotiate) are left out.
#
# Without a Python 2.7 on the machine it says so and exits 0. Otherwise it installs the
# suite, pinned, into target/autobahn/venv (kept: a second run installs nothing), writes the
# reports to target/autobahn/reports, prints the count of each behaviour and fails if any
# case FAILED (or closed with a wrong code, or from the wrong end). NON-STRICT and
# INFORMATIONAL cases are listed, and allowed.
#
# AUTOBAHN_PYTHON=/path/to/python2.7 picks the interpreter; AUTOBAHN_CASES="1.1.* 5.*"
# runs only those cases (the default is the whole set above).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
work=target/autobahn
venv=$work/venv
reports=$work/reports

# --- Python 2.7 -------------------------------------------------------------------------
is_py27() {
  [ -n "$1" ] && [ -x "$1" ] &&
    "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1
}

find_py27() {
  local candidate root prefix
  if [ -n "${AUTOBAHN_PYTHON:-}" ]; then
    is_py27 "$AUTOBAHN_PYTHON" && { echo "$AUTOBAHN_PYTHON"; return 0; }
    echo "AUTOBAHN_PYTHON=$AUTOBAHN_PYTHON is not a Python 2.7" >&2
    return 1
  fi
  # A pyenv installation: its versions directory, then `pyenv prefix`.
  root=${PYENV_ROOT:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.pyenv}
  for candidate in "$root"/versions/2.7*/bin/python2.7; do
    is_py27 "$candidate" && { echo "$candidate"; return 0; }
  done
  if command -v pyenv >/dev/null 2>&1; then
    for prefix in $(pyenv versions --bare 2>/dev/null | grep -E '^2\.7(\.|$)' || true); do
      candidate="$(pyenv prefix "$prefix" 2>/dev/null)/bin/python2.7"
      is_py27 "$candidate" && { echo "$candidate"; return 0; }
    done
  fi
  # A plain interpreter on PATH (a pyenv shim only answers when 2.7 is selected).
  for candidate in python2.7 python2; do
    candidate=$(command -v "$candidate" 2>/dev/null) || continue
    # Resolve a shim to the real interpreter, so the venv does not depend on it.
    candidate=$("$candidate" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
    is_py27 "$candidate" && { echo "$candidate"; return 0; }
  done
  for candidate in /usr/bin/python2.7 /usr/local/bin/python2.7; do
    is_py27 "$candidate" && { echo "$candidate"; return 0; }
  done
  return 1
}

if ! py27=$(find_py27); then
  echo "skipped: no Python 2.7 (the Autobahn test suite needs one; set AUTOBAHN_PYTHON to choose it)"
  exit 0
fi
echo "python 2.7: $py27"

# --- The suite, pinned (the last releases that run on Python 2.7) -----------------------
# autobahntestsuite 0.8.2 asks for autobahn[accelerate,twisted]==0.10.9 and txaio<=2.1.0;
# everything else is pinned to the last version that supports Python 2.7, so that the
# install never depends on what a resolver picks on the day.
requirements='autobahntestsuite==0.8.2
autobahn==0.10.9
txaio==2.1.0
Twisted==20.3.0
zope.interface==5.5.2
attrs==21.4.0
Automat==20.2.0
constantly==15.1.0
incremental==21.3.0
hyperlink==21.0.0
idna==2.10
PyHamcrest==1.10.1
six==1.16.0
typing==3.10.0.0
enum34==1.1.10
ipaddress==1.0.23
Jinja2==2.11.3
MarkupSafe==1.1.1
Werkzeug==1.0.1
klein==20.6.0
Tubes==0.2.1
pyOpenSSL==21.0.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
service-identity==21.1.0
pyasn1==0.4.8
pyasn1-modules==0.2.8
unittest2==1.1.0
linecache2==1.0.0
traceback2==1.4.0
wsaccel==0.6.3
ujson==2.0.3'
stamp_want=$(printf '%s\n%s\n' "$py27" "$requirements" | cksum | cut -d' ' -f1)
stamp=$venv/.autobahn-installed

if [ -x "$venv/bin/wstest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$stamp_want" ]; then
  echo "autobahntestsuite: cached in $venv"
else
  echo "autobahntestsuite: installing into $venv"
  rm -rf "$venv" "$work/bootstrap"
  mkdir -p "$work"
  # Python 2.7 has no venv module: virtualenv 16 (one module, no dependencies) makes one,
  # from a private directory rather than the user's site-packages.
  "$py27" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$work/bootstrap" 'virtualenv==16.7.12' 2>&1 | grep -v DEPRECATION || true
  PYTHONPATH="$work/bootstrap" "$py27" -m virtualenv --quiet "$venv"
  printf '%s\n' "$requirements" >"$work/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$work/requirements.txt" 2>&1 | grep -v DEPRECATION || true
  if ! "$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null 2>&1 ||
    ! "$venv/bin/python" -c 'import autobahntestsuite.wstest' 2>/dev/null; then
    echo "FAILED: autobahntestsuite did not install into $venv"
    "$venv/bin/python" -m pip check --disable-pip-version-check 2>&1 | tail -20 || true
    exit 1
  fi
  echo "$stamp_want" >"$stamp"
fi
installed=$(date +%s)

# --- The echo server --------------------------------------------------------------------
cargo build --release --locked --example ws_echo
rm -rf "$reports"
mkdir -p "$reports"
server_log=$work/ws_echo.log
: >"$server_log"
# Port 0: the server picks a free port and prints it.
./target/release/examples/ws_echo 127.0.0.1:0 >"$server_log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
url=
for _ in $(seq 100); do
  url=$(sed -n 's/^echo \(ws:\/\/[^ ]*\)$/\1/p' "$server_log" || true)
  [ -n "$url" ] && break
  kill -0 $server 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "FAILED: the echo server did not start:"
  cat "$server_log"
  exit 1
fi
echo "echo server: $url (pid $server)"

# --- The fuzzing client -----------------------------------------------------------------
cases=${AUTOBAHN_CASES:-1.* 2.* 3.* 4.* 5.* 6.* 7.* 10.*}
case_list=$(printf '"%s", ' $cases)
cat >"$work/spec.json" <<EOF
{
  "outdir": "$PWD/$reports",
  "servers": [{"agent": "chat-engine", "url": "$url"}],
  "cases": [${case_list%, }],
  "exclude-cases": ["9.*", "12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF
client_log=$work/wstest.log
echo "wstest -m fuzzingclient -s $work/spec.json (log: $client_log)"
status=0
timeout 1200 "$venv/bin/wstest" -m fuzzingclient -s "$work/spec.json" >"$client_log" 2>&1 ||
  status=$?
kill $server 2>/dev/null || true
wait $server 2>/dev/null || true
trap - EXIT
if [ $status -ne 0 ] || [ ! -f "$reports/index.json" ]; then
  echo "FAILED: wstest exited with $status and/or wrote no $reports/index.json:"
  tail -30 "$client_log"
  exit 1
fi
finished=$(date +%s)

# --- The summary ------------------------------------------------------------------------
"$venv/bin/python" - "$reports/index.json" <<'EOF'
import json, sys

def key(case):
    return [int(part) for part in case.split(".")]

with open(sys.argv[1]) as f:
    index = json.load(f)
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
failed = 0
for agent, results in sorted(index.items()):
    counts = dict((b, 0) for b in order)
    close_counts = {}
    listed = {}
    for case in sorted(results, key=key):
        r = results[case]
        behavior = r.get("behavior", "?")
        close = r.get("behaviorClose", "?")
        counts[behavior] = counts.get(behavior, 0) + 1
        close_counts[close] = close_counts.get(close, 0) + 1
        if behavior != "OK" or close not in ("OK", "INFORMATIONAL"):
            listed.setdefault(behavior, []).append(
                "%s (close: %s, remote close code %s)" % (case, close, r.get("remoteCloseCode")))
    print("Autobahn %s: %d cases" % (agent, len(results)))
    for b in order + sorted(set(counts) - set(order)):
        print("  %-14s %d" % (b, counts.get(b, 0)))
    print("  closing handshake: " + ", ".join(
        "%s %d" % (b, n) for b, n in sorted(close_counts.items())))
    for b in sorted(listed, key=lambda b: order.index(b) if b in order else len(order)):
        print("  %s:" % b)
        for line in listed[b]:
            print("    " + line)
    failed += counts.get("FAILED", 0)
    # A wrong close code (the engine relies on 1002, 1007 and 1009) or a connection failed
    # by the wrong endpoint fails the run too, whatever the case's own behaviour.
    failed += sum(1 for r in results.values()
                  if r.get("behavior") != "FAILED"
                  and r.get("behaviorClose") in ("FAILED", "WRONG CODE"))
    if not results:
        failed += 1
if failed:
    print("FAILED: %d case(s); see target/autobahn/reports/index.html" % failed)
    sys.exit(1)
EOF
echo "ok: Autobahn cases ${cases} with 0 FAILED (install $((installed - started)) s, run $((finished - installed)) s)"
