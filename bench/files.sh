#!/usr/bin/env bash
# files.sh - one large file up and down through kiroku's file API, to the
# file store and to S3 (s3rver), against curl talking to s3rver directly.
#
#   bench/files.sh SIZE_MIB
#   scripts/with-s3rver.sh bench/files.sh 1024      # with the S3 part
#   BENCH_FILE_ROUNDS=3 scripts/with-s3rver.sh bench/files.sh 1024
#
# Writes SIZE_MIB MiB of random bytes to a file, then for each path:
# `PUT /files/KEY` with `curl -T` (checks 201 and the size and sha256 in the
# answer), `GET /files/KEY` to /dev/null (timed), and in the first round a
# second GET checked against the file's sha256 (not timed). kiroku's peak RSS
# (VmHWM, reset before each transfer) is read after each transfer. The S3
# part runs when scripts/with-s3rver.sh exported KIROKU_TEST_S3_ENDPOINT; the
# same transfers with curl straight to s3rver (SigV4) are the reference.
# Paths: kiroku on the file store, on s3rver, and on s3rver with
# stream_put_max and stream_get_max; all run at once, and each round (BENCH_FILE_ROUNDS,
# default 1) times every path once, alternating; the table gives medians.
# Placements (BENCH_FILE_PLACEMENTS, default "shared split" when s3rver runs
# and there are 2 or more CPUs): `shared` leaves every process to the
# scheduler; `split` pins s3rver (all its threads) to CPU 0 and kiroku and
# every curl to the other CPUs, as an S3 server on a machine of its own
# would be. s3rver's one JavaScript thread is the bottleneck of every S3
# transfer here, and on 2 shared cores the threads of the process in front
# of it (kiroku) preempt it; curl's reference runs in the same placement.
# The file store is timed in `shared` only. If kiroku answers
# the first PUT with 404 the file API is not there: the script says so and
# exits 0. Prints a Markdown table; with BENCH_JSON=FILE also writes JSON.
# Exits 1 if a transfer fails or a checksum differs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
size_mib="$1"
rounds="${BENCH_FILE_ROUNDS:-1}"

work=$(mktemp -d /tmp/kiroku-files-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT
results="$work/results.jsonl"
: > "$results"

head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/data"
sha=$(sha256sum "$work/data" | cut -d' ' -f1)
bytes=$(stat -c %s "$work/data")

ncpu=$(nproc)
placements=(shared)
[[ -z "${KIROKU_TEST_S3_ENDPOINT:-}" || -z "${KIROKU_TEST_S3_PID:-}" ]] || ((ncpu < 2)) || placements+=(split)
read -r -a placements <<< "${BENCH_FILE_PLACEMENTS:-${placements[*]}}"
placement=shared
client=()  # what runs curl: taskset with the placement's CPUs

# place NAME: moves s3rver and every kiroku to that placement's CPUs.
place() {
  local all="0-$((ncpu - 1))" s3_cpus kiroku_cpus pid
  case "$1" in
    shared) s3_cpus=$all kiroku_cpus=$all ;;
    split) s3_cpus=0 kiroku_cpus="1-$((ncpu - 1))" ;;
    *) bench_die "unknown placement $1 (shared or split)" ;;
  esac
  placement=$1
  client=(taskset -c "$kiroku_cpus")
  [[ -z "${KIROKU_TEST_S3_PID:-}" ]] || taskset -a -p -c "$s3_cpus" "$KIROKU_TEST_S3_PID" > /dev/null
  for pid in "${k_pid[@]}"; do taskset -a -p -c "$kiroku_cpus" "$pid" > /dev/null; done
}

# curl_put URL OUT [CURL_ARGS...]: prints "HTTP_CODE SECONDS"; the answer goes to OUT.
curl_put() {
  local url="$1" out="$2"
  shift 2
  "${client[@]}" curl -sS -H 'Expect:' -T "$work/data" "$@" -o "$out" -w '%{http_code} %{time_total}\n' "$url"
}
curl_get() {
  local url="$1"
  shift
  "${client[@]}" curl -sS "$@" -o /dev/null -w '%{http_code} %{time_total}\n' "$url"
}
# curl_multipart URL: prints the seconds of the multipart upload kiroku makes
# of the same file (8 MiB parts, 4 at once: create, parts, complete), done
# with curl. s3rver assembles a multipart object by reading every part back
# and writing the object again, so this is the reference for the S3 side's
# share of an upload. Splitting the file is not timed.
curl_multipart() {
  local url="$1" parts="$work/parts" t0 id
  rm -rf "$parts" && mkdir -p "$parts"
  split -b 8M -d -a 5 "$work/data" "$parts/p"
  t0=$(date +%s.%N)
  id=$("${client[@]}" curl -sS -X POST "${sigv4[@]}" "$url?uploads" | sed -n 's:.*<UploadId>\(.*\)</UploadId>.*:\1:p')
  [[ -n "$id" ]] || bench_die "multipart upload to s3rver: no upload id"
  local i=0 running=0
  for f in "$parts"/p*; do
    i=$((i + 1))
    "${client[@]}" curl -sS -H 'Expect:' -T "$f" -D "$parts/h$i" -o /dev/null "${sigv4[@]}" \
      "$url?partNumber=$i&uploadId=$id" &
    running=$((running + 1))
    if ((running == 4)); then
      wait -n || bench_die "multipart upload to s3rver: a part failed"
      running=$((running - 1))
    fi
  done
  wait || bench_die "multipart upload to s3rver: a part failed"
  {
    echo "<CompleteMultipartUpload>"
    for ((n = 1; n <= i; n++)); do
      etag=$(sed -n 's/^[Ee][Tt]ag: *\(.*\)\r$/\1/p' "$parts/h$n")
      echo "<Part><PartNumber>$n</PartNumber><ETag>$etag</ETag></Part>"
    done
    echo "</CompleteMultipartUpload>"
  } > "$parts/complete.xml"
  local code
  code=$("${client[@]}" curl -sS -X POST "${sigv4[@]}" --data-binary @"$parts/complete.xml" -o "$parts/answer" \
    -w '%{http_code}' "$url?uploadId=$id")
  [[ "$code" == 200 ]] && ! grep -q "<Error>" "$parts/answer" ||
    { cat "$parts/answer" >&2; bench_die "multipart upload to s3rver: complete answered $code"; }
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$t0" "$(date +%s.%N)"
  rm -rf "$parts"
}

# record STORE DIRECTION SECONDS PEAK_RSS_KB, in the current placement
record() {
  printf '{"placement":"%s","store":"%s","direction":"%s","seconds":%s,"peak_rss_kb":%s}\n' \
    "$placement" "$1" "$2" "$3" "$4" >> "$results"
}

# kiroku instances by path name: their port and pid.
declare -A k_port k_pid

# kiroku_start NAME STORE_URL: a kiroku for the path "kiroku → NAME".
kiroku_start() {
  local slug
  slug=$(printf %s "$1" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-')
  start_kiroku "$work/kiroku-$slug" "sqlite://$work/kiroku-$slug/events.db" process events --store "$2"
  k_port[$1]=$kiroku_port
  k_pid[$1]=$kiroku_pid
}

# kiroku_put NAME KEY: one timed PUT through that kiroku (201, size and
# sha256 in the answer checked).
kiroku_put() {
  local name="$1" key="$2" code secs pid="${k_pid[$1]}"
  reset_peak_rss "$pid"
  read -r code secs < <(curl_put "http://127.0.0.1:${k_port[$name]}/files/$key" "$work/put.json")
  [[ "$code" == 201 ]] || { cat "$work/put.json" >&2; bench_die "PUT through kiroku ($name): $code"; }
  python3 - "$work/put.json" "$bytes" "$sha" <<'PY' || bench_die "PUT through kiroku ($name): wrong answer"
import json, sys
a = json.load(open(sys.argv[1]))
ok = a.get("size") == int(sys.argv[2]) and a.get("sha256") == sys.argv[3]
print(("" if ok else "unexpected answer: ") + json.dumps(a), file=sys.stderr)
sys.exit(0 if ok else 1)
PY
  record "kiroku → $name" upload "$secs" "$(status_kb "$pid" VmHWM)"
}

# kiroku_get NAME KEY [check]: one timed GET through that kiroku; with
# `check`, a second one compared with the file's sha256.
kiroku_get() {
  local name="$1" key="$2" code secs pid="${k_pid[$1]}" base="http://127.0.0.1:${k_port[$1]}/files"
  reset_peak_rss "$pid"
  read -r code secs < <(curl_get "$base/$key")
  [[ "$code" == 200 ]] || bench_die "GET through kiroku ($name): $code"
  record "kiroku → $name" download "$secs" "$(status_kb "$pid" VmHWM)"
  [[ "${3:-}" != check || "$(curl -sS "$base/$key" | sha256sum | cut -d' ' -f1)" == "$sha" ]] ||
    bench_die "GET through kiroku ($name): the bytes differ from what was uploaded"
}

# Is the file API there?
start_kiroku "$work/probe" "sqlite://$work/probe/events.db" process events --store "file://$work/probe/objects"
probe=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT --data-binary probe \
  "http://127.0.0.1:$kiroku_port/files/bench-probe")
stop_kiroku
if [[ "$probe" == 404 ]]; then
  echo "not measured: file API missing (PUT /files/KEY answers 404)"
  [[ -z "${BENCH_JSON:-}" ]] || echo "{\"status\": \"missing\", \"size_mib\": $size_mib}" > "$BENCH_JSON"
  exit 0
fi
[[ "$probe" == 201 ]] || bench_die "PUT /files/bench-probe answered $probe"

names=(file)
kiroku_start file "file://$work/objects"
if [[ -n "${KIROKU_TEST_S3_ENDPOINT:-}" ]]; then
  sigv4=(--aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
  direct="$KIROKU_TEST_S3_ENDPOINT/$KIROKU_TEST_S3_BUCKET/direct-$size_mib"
  s3url="s3://$KIROKU_TEST_S3_BUCKET?endpoint=$KIROKU_TEST_S3_ENDPOINT&region=${AWS_REGION:-us-east-1}"
  kiroku_start s3rver "$s3url"
  # The same with uploads of a known size sent as one streamed PUT and
  # downloads fetched with one streamed GET, as curl's are.
  kiroku_start "s3rver, streamed" "$s3url&stream_put_max=$((5 << 30))&stream_get_max=$((5 << 30))"
  names+=(s3rver "s3rver, streamed")
fi

# Rounds: every path once per round, alternating, so a passing disturbance
# of the machine does not fall on one path only; the report takes medians.
for ((round = 1; round <= rounds; round++)); do
  for p in "${placements[@]}"; do
    place "$p"
    paths=("${names[@]}")
    [[ "$p" == shared ]] || paths=("${names[@]:1}")  # the file store: shared only
    if [[ -n "${KIROKU_TEST_S3_ENDPOINT:-}" ]]; then
      read -r code secs < <(curl_put "$direct" "$work/direct.txt" "${sigv4[@]}")
      [[ "$code" == 200 ]] || { cat "$work/direct.txt" >&2; bench_die "PUT to s3rver: $code"; }
      record "curl → s3rver" upload "$secs" 0
    fi
    for name in "${paths[@]}"; do kiroku_put "$name" "bench/$size_mib-$round-$p"; done
    if [[ -n "${KIROKU_TEST_S3_ENDPOINT:-}" ]]; then
      read -r code secs < <(curl_get "$direct" "${sigv4[@]}")
      [[ "$code" == 200 ]] || bench_die "GET from s3rver: $code"
      record "curl → s3rver" download "$secs" 0
    fi
    for name in "${paths[@]}"; do
      kiroku_get "$name" "bench/$size_mib-$round-$p" "$( ((round == 1)) && [[ "$p" == "${placements[0]}" ]] && echo check)"
    done
  done
done
if [[ -n "${KIROKU_TEST_S3_ENDPOINT:-}" ]]; then
  for p in "${placements[@]}"; do
    place "$p"
    read -r secs < <(curl_multipart "$KIROKU_TEST_S3_ENDPOINT/$KIROKU_TEST_S3_BUCKET/direct-mp-$size_mib")
    record "curl → s3rver, multipart" upload "$secs" 0
  done
fi
for name in "${names[@]}"; do
  kiroku_pid="${k_pid[$name]}"
  stop_kiroku
done

cat > "$work/report.py" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
size_mib, as_json = int(sys.argv[2]), sys.argv[3] == "json"
# One row per placement, path and direction, by placement and then in the
# order first measured: the median of its rounds, the largest peak RSS.
# Ratios compare with curl in the same placement.
rows, order = {}, []
for r in runs:
    if r["placement"] not in order:
        order.append(r["placement"])
    key = (r["placement"], r["store"], r["direction"])
    row = rows.setdefault(key, {"placement": r["placement"], "store": r["store"], "direction": r["direction"],
                                "rounds": [], "peak_rss_kb": 0})
    row["rounds"].append(r["seconds"])
    row["peak_rss_kb"] = max(row["peak_rss_kb"], r["peak_rss_kb"])
rows = sorted(rows.values(), key=lambda r: order.index(r["placement"]))
for r in rows:
    r["seconds"] = statistics.median(r["rounds"])
ref = {(r["placement"], r["direction"]): r["seconds"] for r in rows if r["store"] == "curl → s3rver"}
mp = {(r["placement"], r["direction"]): r["seconds"] for r in rows if r["store"] == "curl → s3rver, multipart"}
for r in rows:
    r["mib_per_s"] = size_mib / r["seconds"]
    s3 = r["store"].startswith("kiroku → s3rver")
    base = ref.get((r["placement"], r["direction"])) if s3 else None
    r["ratio_to_direct"] = base / r["seconds"] if base else None
    base = mp.get((r["placement"], r["direction"])) if s3 else None
    r["ratio_to_multipart"] = base / r["seconds"] if base else None
if as_json:
    print(json.dumps({"status": "measured", "size_mib": size_mib, "transfers": rows}))
    sys.exit(0)
print(f"| placement | path | direction | {size_mib} MiB in (s, median) | rounds (s) | MiB/s | ratio to curl → s3rver | ratio to curl multipart | kiroku peak RSS (MiB) |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    ratio = f"{r['ratio_to_direct']:.2f}" if r["ratio_to_direct"] else "–"
    ratio_mp = f"{r['ratio_to_multipart']:.2f}" if r["ratio_to_multipart"] else "–"
    rss = f"{r['peak_rss_kb'] / 1024:.0f}" if r["peak_rss_kb"] else "–"
    rounds = ", ".join(f"{x:.2f}" for x in r["rounds"])
    print(f"| {r['placement']} | {r['store']} | {r['direction']} | {r['seconds']:.2f} | {rounds} | {r['mib_per_s']:.0f} | {ratio} | {ratio_mp} | {rss} |")
PY
python3 "$work/report.py" "$results" "$size_mib" table
[[ -z "${BENCH_JSON:-}" ]] || python3 "$work/report.py" "$results" "$size_mib" json > "$BENCH_JSON"
