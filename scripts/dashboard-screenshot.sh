#!/usr/bin/env bash
# dashboard-screenshot.sh - a screenshot (and the DOM) of the live dashboard, by headless Chromium.
#
#   scripts/dashboard-screenshot.sh URL OUT.png [OUT-DOM.html]
#
# URL is the page, e.g. http://127.0.0.1:8080/dashboard. With a third
# argument the page's DOM at the moment of the shot is written there too:
# each chart is a <section data-chart=ID data-points=N> where N counts the
# samples it drew, and <body data-polls=N data-error=...> counts the polls.
#
# Two clocks:
# - real time (default): the page runs for DASHBOARD_SECONDS (default 6)
#   seconds of wall time, so rates are true rates. Chromium is driven over
#   its DevTools pipe by a few lines of python3.
# - virtual time (DASHBOARD_VIRTUAL_MS=N): Chromium's --virtual-time-budget
#   runs N ms of page time in far less wall time. Quick and needs no python,
#   but the server's counters move in wall time, so rates come out too low.
#   Good for "does the page draw at all", not for reading the numbers.
#
# DASHBOARD_WINDOW_SIZE (default 1400,900) sets the viewport. Needs Debian's
# chromium (apt-get install chromium). Exit code 0 when every file was
# written, 1 otherwise, 2 on bad usage.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 URL OUT.png [OUT-DOM.html]" >&2
  exit 2
fi
url=$1
png=$2
dom=${3:-}
size=${DASHBOARD_WINDOW_SIZE:-1400,900}
seconds=${DASHBOARD_SECONDS:-6}
virtual_ms=${DASHBOARD_VIRTUAL_MS:-}

browser=""
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then
    browser=$(command -v "$candidate")
    break
  fi
done
if [[ -z $browser ]]; then
  echo "$0: no chromium found (apt-get install chromium)" >&2
  exit 1
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$png"
[[ -n $dom ]] && rm -f "$dom"

# The flags keep the browser to the page alone: no first-run, sync, component
# or background traffic, no GPU, and a throwaway profile.
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --disable-default-apps --disable-extensions --mute-audio --hide-scrollbars
  --user-data-dir="$profile" --window-size="$size")

fail() {
  echo "$0: $1; chromium said:" >&2
  tail -n 20 "$profile/browser.log" >&2 || true
  exit 1
}

if [[ -n $virtual_ms ]]; then
  timeout 120 "$browser" "${flags[@]}" --virtual-time-budget="$virtual_ms" \
    --screenshot="$png" "$url" >/dev/null 2>"$profile/browser.log" || true
  [[ -s $png ]] || fail "no screenshot written"
  if [[ -n $dom ]]; then
    timeout 120 "$browser" "${flags[@]}" --virtual-time-budget="$virtual_ms" \
      --dump-dom "$url" >"$dom" 2>"$profile/browser.log" || true
    [[ -s $dom ]] || fail "no DOM written"
  fi
  exit 0
fi

# Real time: the DevTools protocol over --remote-debugging-pipe (the browser
# reads commands on its fd 3 and answers on fd 4, NUL-terminated JSON).
if ! command -v python3 >/dev/null 2>&1; then
  echo "$0: python3 is needed (or set DASHBOARD_VIRTUAL_MS)" >&2
  exit 1
fi
timeout $((seconds + 90)) python3 - "$browser" "$url" "$png" "$dom" "$seconds" "$size" \
  "$profile/browser.log" "${flags[@]}" <<'PYTHON' || fail "the browser run failed"
import base64, json, os, subprocess, sys, time

browser, url, png, dom, seconds, size, log = sys.argv[1:8]
flags = sys.argv[8:]
width, height = (int(v) for v in size.split(','))

to_browser_r, to_browser_w = os.pipe()
from_browser_r, from_browser_w = os.pipe()

def child_fds():
    # Copies first, so that neither pipe end is overwritten by the other's dup2.
    reads, writes = os.dup(to_browser_r), os.dup(from_browser_w)
    os.dup2(reads, 3)
    os.dup2(writes, 4)

with open(log, 'wb') as log_file:
    proc = subprocess.Popen([browser, *flags, '--remote-debugging-pipe', 'about:blank'],
                            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                            preexec_fn=child_fds, close_fds=False)
os.close(to_browser_r)
os.close(from_browser_w)
out = os.fdopen(to_browser_w, 'wb', buffering=0)
inp = os.fdopen(from_browser_r, 'rb', buffering=0)
pending = b''
next_id = 0

def call(method, params=None, session=None):
    global pending, next_id
    next_id += 1
    message = {'id': next_id, 'method': method, 'params': params or {}}
    if session:
        message['sessionId'] = session
    out.write(json.dumps(message).encode() + b'\0')
    while True:
        while b'\0' not in pending:
            chunk = inp.read(1 << 16)
            if not chunk:
                sys.exit('the browser closed its pipe during ' + method)
            pending += chunk
        raw, pending = pending.split(b'\0', 1)
        answer = json.loads(raw)
        if answer.get('id') == next_id:
            if 'error' in answer:
                sys.exit(method + ': ' + json.dumps(answer['error']))
            return answer.get('result', {})

try:
    target = call('Target.createTarget', {'url': 'about:blank'})['targetId']
    session = call('Target.attachToTarget', {'targetId': target, 'flatten': True})['sessionId']
    call('Emulation.setDeviceMetricsOverride',
         {'width': width, 'height': height, 'deviceScaleFactor': 1, 'mobile': False}, session)
    call('Page.navigate', {'url': url}, session)
    time.sleep(float(seconds))
    shot = call('Page.captureScreenshot', {'format': 'png'}, session)
    with open(png, 'wb') as f:
        f.write(base64.b64decode(shot['data']))
    if dom:
        html = call('Runtime.evaluate', {'expression': 'document.documentElement.outerHTML',
                                         'returnByValue': True}, session)
        with open(dom, 'w', encoding='utf-8') as f:
            f.write('<!DOCTYPE html>\n' + html['result']['value'] + '\n')
    try:
        call('Browser.close')
    except SystemExit:
        pass
finally:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
PYTHON
[[ -s $png ]] || fail "no screenshot written"
[[ -z $dom || -s $dom ]] || fail "no DOM written"
