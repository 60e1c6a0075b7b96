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
# stream_put_max and stream_get_max; all run at once. Each round
# (BENCH_FILE_ROUNDS, default 1) uploads once per path and downloads
# BENCH_FILE_GETS times (default 1), curl's reference in turn with the
# kiroku paths (the order rotates), then deletes what it stored, so every
# round starts from the same S3 state. A ratio is the median of the ratios
# of each kiroku transfer to curl's in the same round (and download turn):
# s3rver's own speed moves by a third from one transfer to the next, and
# pairing keeps that drift out of the ratio. Each transfer also records the
# CPU seconds kiroku and s3rver used (utime + stime from /proc/PID/stat).
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

# cpu_ticks PID: the CPU time the process used so far (utime + stime, in
# clock ticks; 0 without PID).
cpu_ticks() { [[ -z "${1:-}" ]] && echo 0 || awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# timed PID CMD...: runs CMD (which prints "HTTP_CODE SECONDS") and prints
# "HTTP_CODE SECONDS KIROKU_CPU_S S3RVER_CPU_S": the CPU seconds PID (a
# kiroku, or none) and s3rver used meanwhile.
timed() {
  local pid="$1" k0 s0 out
  shift
  k0=$(cpu_ticks "$pid") s0=$(cpu_ticks "${KIROKU_TEST_S3_PID:-}")
  out=$("$@")
  echo "$out $(awk -v h="$hz" -v k0="$k0" -v k1="$(cpu_ticks "$pid")" -v s0="$s0" \
    -v s1="$(cpu_ticks "${KIROKU_TEST_S3_PID:-}")" 'BEGIN { print (k1 - k0) / h, (s1 - s0) / h }')"
}

# record STORE DIRECTION PAIR SECONDS KIROKU_CPU_S S3RVER_CPU_S PEAK_RSS_KB,
# in the current placement; PAIR names the curl transfer this one is
# compared with (the round, and for downloads the turn).
record() {
  printf '{"placement":"%s","store":"%s","direction":"%s","pair":"%s","seconds":%s,"kiroku_cpu_s":%s,"s3_cpu_s":%s,"peak_rss_kb":%s}\n' \
    "$placement" "$1" "$2" "$3" "$4" "$5" "$6" "$7" >> "$results"
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

# kiroku_put NAME KEY PAIR: one timed PUT through that kiroku (201, size and
# sha256 in the answer checked).
kiroku_put() {
  local name="$1" key="$2" code secs kcpu scpu pid="${k_pid[$1]}"
  reset_peak_rss "$pid"
  read -r code secs kcpu scpu < <(timed "$pid" curl_put "http://127.0.0.1:${k_port[$name]}/files/$key" "$work/put.json")
  [[ "$code" == 201 ]] || { cat "$work/put.json" >&2; bench_die "PUT through kiroku ($name): $code"; }
  python3 - "$work/put.json" "$bytes" "$sha" <<'PY' || bench_die "PUT through kiroku ($name): wrong answer"
import json, sys
a = json.load(open(sys.argv[1]))
ok = a.get("size") == int(sys.argv[2]) and a.get("sha256") == sys.argv[3]
print(("" if ok else "unexpected answer: ") + json.dumps(a), file=sys.stderr)
sys.exit(0 if ok else 1)
PY
  record "kiroku → $name" upload "$3" "$secs" "$kcpu" "$scpu" "$(status_kb "$pid" VmHWM)"
}

# kiroku_get NAME KEY PAIR [check]: one timed GET through that kiroku; with
# `check`, a second one compared with the file's sha256.
kiroku_get() {
  local name="$1" key="$2" code secs kcpu scpu pid="${k_pid[$1]}" base="http://127.0.0.1:${k_port[$1]}/files"
  reset_peak_rss "$pid"
  read -r code secs kcpu scpu < <(timed "$pid" curl_get "$base/$key")
  [[ "$code" == 200 ]] || bench_die "GET through kiroku ($name): $code"
  record "kiroku → $name" download "$3" "$secs" "$kcpu" "$scpu" "$(status_kb "$pid" VmHWM)"
  [[ "${4:-}" != check || "$(curl -sS "$base/$key" | sha256sum | cut -d' ' -f1)" == "$sha" ]] ||
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

# direct_put PAIR / direct_get PAIR: curl's timed reference transfers.
direct_put() {
  local code secs kcpu scpu
  read -r code secs kcpu scpu < <(timed "" curl_put "$direct" "$work/direct.txt" "${sigv4[@]}")
  [[ "$code" == 200 ]] || { cat "$work/direct.txt" >&2; bench_die "PUT to s3rver: $code"; }
  record "curl → s3rver" upload "$1" "$secs" null "$scpu" 0
}
direct_get() {
  local code secs kcpu scpu
  read -r code secs kcpu scpu < <(timed "" curl_get "$direct" "${sigv4[@]}")
  [[ "$code" == 200 ]] || bench_die "GET from s3rver: $code"
  record "curl → s3rver" download "$1" "$secs" null "$scpu" 0
}

# Rounds: every path once per round, alternating, so a passing disturbance
# of the machine does not fall on one path only; downloads take turns with
# curl's, in an order that rotates from turn to turn.
gets="${BENCH_FILE_GETS:-1}"
for ((round = 1; round <= rounds; round++)); do
  for p in "${placements[@]}"; do
    place "$p"
    paths=("${names[@]}")
    [[ "$p" == shared ]] || paths=("${names[@]:1}")  # the file store: shared only
    key="bench/$size_mib-$round-$p"
    [[ -z "${KIROKU_TEST_S3_ENDPOINT:-}" ]] || direct_put "$round"
    for name in "${paths[@]}"; do kiroku_put "$name" "$key" "$round"; done
    turn=("${paths[@]}")
    [[ -z "${KIROKU_TEST_S3_ENDPOINT:-}" ]] || turn=(direct "${paths[@]}")
    for ((g = 1; g <= gets; g++)); do
      for ((i = 0; i < ${#turn[@]}; i++)); do
        name="${turn[(i + g - 1) % ${#turn[@]}]}"
        if [[ "$name" == direct ]]; then
          direct_get "$round.$g"
        else
          kiroku_get "$name" "$key" "$round.$g" \
            "$( ((round == 1 && g == 1)) && [[ "$p" == "${placements[0]}" ]] && echo check)"
        fi
      done
    done
    # Not timed: what this round stored goes, so every round starts alike.
    for name in "${paths[@]}"; do
      code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.1:${k_port[$name]}/files/$key")
      [[ "$code" == 204 ]] || bench_die "DELETE through kiroku ($name): $code"
    done
    [[ -z "${KIROKU_TEST_S3_ENDPOINT:-}" ]] || curl -sS -X DELETE "${sigv4[@]}" -o /dev/null "$direct"
  done
done
if [[ -n "${KIROKU_TEST_S3_ENDPOINT:-}" ]]; then
  for p in "${placements[@]}"; do
    place "$p"
    read -r secs kcpu scpu < <(timed "" curl_multipart "$direct-mp")
    record "curl → s3rver, multipart" upload mp "$secs" null "$scpu" 0
    curl -sS -X DELETE "${sigv4[@]}" -o /dev/null "$direct-mp"
  done
fi
for name in "${names[@]}"; do
  kiroku_pid="${k_pid[$name]}"
  stop_kiroku
done

cat > "$work/report.py" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
size_mib, as_json, nrounds, ngets = int(sys.argv[2]), sys.argv[3] == "json", int(sys.argv[4]), int(sys.argv[5])
# One row per placement, path and direction, by placement and then in the
# order first measured: the median of its transfers' seconds and CPU
# seconds, the largest peak RSS. ratio_to_direct is the median of the
# ratios of each transfer to curl's paired with it (same placement, round
# and turn); ratio_to_multipart compares medians (curl's multipart upload
# runs once per placement).
rows, order, direct = {}, [], {}
for r in runs:
    if r["placement"] not in order:
        order.append(r["placement"])
    if r["store"] == "curl → s3rver":
        direct[(r["placement"], r["direction"], r["pair"])] = r["seconds"]
    key = (r["placement"], r["store"], r["direction"])
    row = rows.setdefault(key, {"placement": r["placement"], "store": r["store"], "direction": r["direction"],
                                "rounds": [], "paired_ratios": [], "kiroku_cpu": [], "s3_cpu": [],
                                "peak_rss_kb": 0})
    row["rounds"].append(r["seconds"])
    if r["kiroku_cpu_s"] is not None:
        row["kiroku_cpu"].append(r["kiroku_cpu_s"])
    row["s3_cpu"].append(r["s3_cpu_s"])
    row["peak_rss_kb"] = max(row["peak_rss_kb"], r["peak_rss_kb"])
for r in runs:
    base = direct.get((r["placement"], r["direction"], r["pair"]))
    if base and r["store"].startswith("kiroku → s3rver"):
        rows[(r["placement"], r["store"], r["direction"])]["paired_ratios"].append(base / r["seconds"])
rows = sorted(rows.values(), key=lambda r: order.index(r["placement"]))
med = lambda xs: statistics.median(xs) if xs else None
mp = {(r["placement"], r["direction"]): med(r["rounds"]) for r in rows if r["store"] == "curl → s3rver, multipart"}
for r in rows:
    r["seconds"] = med(r["rounds"])
    r["mib_per_s"] = size_mib / r["seconds"]
    r["kiroku_cpu_s"] = med(r.pop("kiroku_cpu"))
    s3_cpu = r.pop("s3_cpu")
    r["s3_cpu_s"] = med(s3_cpu) if "s3rver" in r["store"] else None
    r["ratio_to_direct"] = med(r["paired_ratios"])
    base = mp.get((r["placement"], r["direction"])) if r["store"].startswith("kiroku → s3rver") else None
    r["ratio_to_multipart"] = base / r["seconds"] if base else None
if as_json:
    print(json.dumps({"status": "measured", "size_mib": size_mib, "rounds": nrounds, "gets": ngets, "transfers": rows}))
    sys.exit(0)
two = lambda x: f"{x:.2f}" if x is not None else "–"
print(f"| placement | path | direction | {size_mib} MiB in (s, median) | transfers (s) | MiB/s "
      "| ratio to curl → s3rver (median of paired) | paired ratios | ratio to curl multipart "
      "| kiroku CPU (s) | s3rver CPU (s) | kiroku peak RSS (MiB) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    rss = f"{r['peak_rss_kb'] / 1024:.0f}" if r["peak_rss_kb"] else "–"
    rounds = ", ".join(f"{x:.2f}" for x in r["rounds"])
    paired = ", ".join(f"{x:.2f}" for x in r["paired_ratios"]) or "–"
    print(f"| {r['placement']} | {r['store']} | {r['direction']} | {r['seconds']:.2f} | {rounds} | {r['mib_per_s']:.0f} "
          f"| {two(r['ratio_to_direct'])} | {paired} | {two(r['ratio_to_multipart'])} | {two(r['kiroku_cpu_s'])} "
          f"| {two(r['s3_cpu_s'])} | {rss} |")
PY
python3 "$work/report.py" "$results" "$size_mib" table "$rounds" "$gets"
[[ -z "${BENCH_JSON:-}" ]] || python3 "$work/report.py" "$results" "$size_mib" json "$rounds" "$gets" > "$BENCH_JSON"
