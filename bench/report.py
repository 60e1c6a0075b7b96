#!/usr/bin/env python3
"""report.py - writes BENCHMARKS.md, its plots and README's capacity figures
from the results of one bench/run.sh run.

    bench/report.py --mode full|quick --results DIR --out FILE --plots DIR
                    --readme FILE [--restricted 0|1]

Reads the JSON and log files the suite's steps wrote into DIR (see run.sh),
writes the Markdown report to FILE, two PNG charts into --plots (with
gnuplot), and replaces the lines between the capacity markers in --readme.
Only figures measured in this run are written; a step that failed or did not
run shows as such. Exits 1 if the README has no markers or gnuplot fails.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

MODES = ["none", "process", "fsync", "sink"]
SINKS = [("sqlite", "SQLite"), ("mariadb", "MariaDB")]
README_BEGIN = "<!-- capacity figures: written by bench/run.sh full, do not edit by hand -->"
README_END = "<!-- end of capacity figures -->"


def load(results, name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    if name.endswith(".json"):
        try:
            return json.loads(text)
        except ValueError:
            return None
    return text


def num(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def mib(kb):
    return "–" if not kb else f"{kb / 1024:.0f}"


class Report:
    def __init__(self, args):
        self.a = args
        self.r = args.results
        self.lines = []
        self.failed = (load(self.r, "failed") or "").split()
        self.failed = [f for f in self.failed if f != "FAILED:"]
        self.m0 = load(self.r, "machine-start.json") or {}
        self.m1 = load(self.r, "machine-end.json") or {}
        self.wrk = {(k, d): load(self.r, f"wrk-{k}-{d}.json") for k, _ in SINKS for d in MODES}
        self.rate = {(k, d): load(self.r, f"rate-{k}-{d}.json") for k, _ in SINKS for d in MODES}
        self.spool = load(self.r, "spool.json")
        self.files = load(self.r, "files.json")
        self.loadcheck = load(self.r, "loadcheck.json")
        self.outage = load(self.r, "outage.json")
        self.scale = load(self.r, "scale.json")
        self.badrows = load(self.r, "badrows.json")
        self.bulk = parse_bulk(load(self.r, "bulk-mariadb.log"))
        self.pgbulk = parse_bulk(load(self.r, "bulk-postgresql.log"))
        self.chbulk = parse_clickhouse_bulk(load(self.r, "bulk-clickhouse.log"))
        self.params = load(self.r, "params.json")

    def w(self, text=""):
        self.lines.append(text)

    def plot_ref(self, name):
        rel = os.path.relpath(os.path.join(self.a.plots, name), os.path.dirname(os.path.abspath(self.a.out)))
        return rel

    # ------------------------------------------------------------------
    def header(self):
        m = self.m0
        self.w("# Benchmarks")
        self.w()
        self.w(f"Written by `bench/run.sh {self.a.mode}` on {m.get('utc', '?')}; do not edit by hand, "
               "run the suite again. Every figure below was measured in that one run on the machine "
               "described here, each ratio against its reference measured in the same run, side by "
               "side. Nothing is estimated.")
        if self.a.mode != "full":
            self.w()
            self.w(f"**This is a `{self.a.mode}` run: durations of a second or two and a low rate, to "
                   "check that the suite works. Its figures say nothing about performance.**")
        if self.a.restricted == "1":
            self.w()
            self.w("**Only part of the suite ran (BENCH_SINKS / BENCH_MODES / BENCH_PARTS).**")
        if self.failed:
            self.w()
            self.w("**Steps that failed in this run: " + ", ".join(f"`{f}`" for f in self.failed) +
                   ".** Their figures are missing or must not be trusted.")
        self.w()
        self.w("## Machine")
        self.w()
        self.w("| | |")
        self.w("|---|---|")
        self.w(f"| CPU | {m.get('cpu', '?')}, {m.get('nproc', '?')} cores (`nproc`) |")
        self.w(f"| memory | {m.get('mem_gib', '?')} GiB |")
        self.w(f"| system | {m.get('os', '?')}, Linux {m.get('kernel', '?')} |")
        self.w(f"| load average (1, 5, 15 min) | before {' '.join(m.get('loadavg', []))}, "
               f"after {' '.join(self.m1.get('loadavg', []))} |")
        self.w(f"| kiroku | {m.get('kiroku', '?')}, commit {m.get('commit', '?')}, "
               f"build type {m.get('build', '?')} |")
        for tool in ("nginx", "wrk", "mariadb", "sqlite", "curl", "gnuplot"):
            self.w(f"| {tool} | {m.get(tool, '?')} |")
        self.w()
        self.w("On a machine with few cores the load generator, the reference server, kiroku and "
               "MariaDB share them: read the ratios, and the absolute figures as what this machine "
               "gave to everything at once.")
        self.w()

    def commands(self):
        p = self.params
        segs = max(1, round(seconds(p["duration"]) / seconds(p["segment"])))
        sink_conn = max(64, int(float(p["rate"])) // 6)
        self.w("## Commands")
        self.w()
        self.w("```sh")
        self.w(f"bench/run.sh {self.a.mode}")
        self.w("```")
        self.w()
        self.w("runs, for SQLite (a file in a temporary directory) and for MariaDB "
               "(`scripts/with-mariadb.sh`, a temporary server on loopback), in each durability mode:")
        self.w()
        self.w("```sh")
        self.w(f"bench/http_vs_nginx.sh {p['rounds']} {p['secs']} MODE [SINK]   # maximum throughput")
        self.w(f"bench/constant_rate.sh {p['rate']} {p['duration']} MODE [SINK]   # the constant rate")
        self.w("```")
        self.w()
        self.w("which run")
        self.w()
        self.w("```sh")
        self.w("nginx -c DIR/nginx.conf -g 'daemon off;'      # worker_processes 1; location / { return 204; }")
        self.w(f"build/kiroku serve --listen 127.0.0.1:PORT --threads {p.get('threads', '1')} "
               "--sink SINK --table TABLE \\")
        self.w("  --durability MODE --spool-dir DIR/spool --log-level warn")
        self.w(f"# rounds: {p['rounds']}, alternating")
        self.w(f"wrk -t1 -c64 -d{p['secs']}s 'http://127.0.0.1:NGINX_PORT/?name=bench&value=1'")
        self.w(f"wrk -t1 -c64 -d{p['secs']}s 'http://127.0.0.1:KIROKU_PORT/?name=bench&value=1'")
        self.w(f"# {segs} back-to-back runs of {p['segment']} ({p['duration']} in all) against a fresh kiroku;")
        self.w(f"# --connections {sink_conn} with MODE sink (every answer waits for its commit):")
        self.w(f"build/kiroku load --url 'http://127.0.0.1:PORT/?name={{name}}&value={{seq}}' --rate {p['rate']} \\")
        self.w(f"  --duration {p['segment']} --connections 64 --threads 1 --quiet --json")
        self.w("curl http://127.0.0.1:PORT/stats      # accept-to-durable histogram, events accepted")
        self.w("kill -TERM PID                        # graceful stop: everything accepted is written")
        self.w("sqlite3 FILE 'select count(*) from TABLE'   # or SELECT COUNT(*) in MariaDB: rows = accepted?")
        self.w("```")
        self.w()
        self.w("and then")
        self.w()
        self.w("```sh")
        self.w(f"scripts/with-mariadb.sh build/bench/mysql_bulk_bench --method sink {p['bulk']}")
        self.w(f"scripts/with-postgres.sh build/bench/postgresql_bulk_bench {p['bulk']}")
        self.w("scripts/with-clickhouse.sh bash -c 'build/bench/clickhouse_bulk_bench $0 && "
               "build/bench/clickhouse_bulk_bench --url \"$KIROKU_TEST_CLICKHOUSE_CLUSTER_URL\" $0' "
               f"'{p['bulk']}'")
        self.w(f"bench/spool_size.sh {self.spool['events'] if self.spool else 'EVENTS'}")
        size = self.files.get("size_mib") if self.files else "SIZE_MIB"
        nrounds, ngets = self.files_rounds()
        self.w(f"BENCH_FILE_ROUNDS={nrounds} BENCH_FILE_GETS={ngets} scripts/with-s3rver.sh bench/files.sh {size}")
        self.w(f"bench/load_vs_wrk.sh {p['rounds']} {p['secs']}   # kiroku load --rate 0 against wrk, on nginx")
        if self.outage:
            o = self.outage
            self.w(f"scripts/with-mariadb.sh bench/outage.sh {o['rate']:g} {o['before_s']} {o['outage_s']} "
                   f"{o['after_s']}   # MariaDB stopped under load")
        if self.scale:
            self.w(f"scripts/with-mariadb.sh bench/scale_out.sh {self.scale['rounds']} {self.scale['seconds']:g}"
                   "   # 1, 2, 3 instances behind haproxy")
        if self.badrows:
            b = self.badrows
            self.w(f"scripts/with-mariadb.sh bench/bad_rows.sh {b['rounds']} {b['seconds']:g} {b['every']}"
                   "   # refused rows")
        self.w("build/bench/spool_bench; build/bench/metrics_bench; build/bench/multipart_bench")
        self.w("build/test/kiroku_unit_tests --gtest_filter='*AllocTest*'")
        self.w("```")
        self.w()

    # ------------------------------------------------------------------
    def throughput(self):
        p = self.params
        self.w("## Maximum throughput against nginx (`wrk -t1 -c64`)")
        self.w()
        self.w(f"Each row: rounds of {p['secs']} s ({p['rounds']} each), nginx and kiroku alternating, means "
               "of the rounds; the ratio is kiroku's mean over nginx's mean in the same rows' rounds. "
               "CPU is the process's user + system time over the rounds' wall time (kiroku: its IO "
               "thread and its writer thread together). Rows are counted after a graceful stop; "
               "`wrk` does not count requests still in flight when a round ends, so accepted ≥ "
               "completed.")
        self.w()
        self.w(f"![Throughput by configuration]({self.plot_ref('throughput.png')})")
        self.w()
        self.w("| sink | durability | nginx 204 (req/s) | kiroku (req/s) | ratio | nginx CPU (cores) "
               "| kiroku CPU (cores) | kiroku events per CPU-second | completed (wrk) | non-2xx "
               "| accepted | rows | rows = accepted | peak RSS (MiB) |")
        self.w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k, name in SINKS:
            for d in MODES:
                r = self.wrk[(k, d)]
                if r is None:
                    if f"wrk-{k}-{d}" in self.failed:
                        self.w(f"| {name} | {d} | failed | | | | | | | | | | | |")
                    continue
                self.w(f"| {name} | {d} | {num(r['nginx_mean'])} | {num(r['kiroku_mean'])} | "
                       f"**{r['ratio']:.2f}** | {r['nginx_cpu_cores']:.2f} | {r['kiroku_cpu_cores']:.2f} | "
                       f"{num(per_core(r['kiroku_mean'], r['kiroku_cpu_cores']))} | {num(r['completed'])} | "
                       f"{r['non2xx']} | {num(r['accepted'])} | {num(r['rows'])} | "
                       f"{'yes' if r['rows'] == r['accepted'] else '**NO**'} | {mib(r['peak_rss_kb'])} |")
        self.w()
        self.w("Rounds:")
        self.w()
        self.w("| sink | durability | nginx per round | kiroku per round |")
        self.w("|---|---|---|---|")
        for k, name in SINKS:
            for d in MODES:
                r = self.wrk[(k, d)]
                if r:
                    self.w(f"| {name} | {d} | {' / '.join(num(x) for x in r['nginx_rps'])} | "
                           f"{' / '.join(num(x) for x in r['kiroku_rps'])} |")
        self.w()
        self.w("With `--durability sink` every answer waits for its batch's commit (up to "
               "`--flush-interval`, 50 ms, plus the transaction), so 64 connections carry at most "
               "64 requests per commit cycle: that figure measures the mode's latency, not kiroku's "
               "capacity.")
        self.w()

    def constant(self):
        p = self.params
        self.w("## The seed's test: a constant rate")
        self.w()
        self.w(f"A constant {num(float(p['rate']))} requests/s for {p['duration']}: `kiroku load` "
               f"(open model: each request's latency counts from when it was due, so a stall shows "
               f"in every request due during it) against a fresh kiroku with "
               f"{p.get('threads', '1')} IO thread(s), as back-to-back runs of {p['segment']}; "
               f"connections are reopened between "
               f"runs. Client latency: the median run's p50, the worst run's p99, p99.9 and max. "
               f"Accept-to-durable: kiroku's own histogram (`/stats`, from receipt to the database "
               f"commit), over the whole run. Peak RSS: kiroku's VmHWM. CPU: user + system time over "
               f"the wall time of the load. MariaDB's CPU and RSS are those of its server process.")
        self.w()
        self.w(f"![Client latency percentiles over time]({self.plot_ref('latency.png')})")
        self.w()
        self.w("| sink | durability | connections | answered | req/s | gaps (s) | errors | 2xx | client p50 (ms) "
               "| client p99 (ms) | client p99.9 (ms) | client max (ms) | accept→durable p50 (ms) "
               "| accept→durable p99 (ms) | accept→durable max (ms) | kiroku peak RSS (MiB) "
               "| kiroku CPU (cores) | MariaDB CPU (cores) | MariaDB RSS (MiB) | accepted | rows "
               "| rows = accepted |")
        self.w("|" + "---|" * 22)
        for k, name in SINKS:
            for d in MODES:
                r = self.rate[(k, d)]
                if r is None:
                    if f"rate-{k}-{d}" in self.failed:
                        self.w(f"| {name} | {d} | failed |" + " |" * 19)
                    continue
                db = k == "mariadb"
                db_cpu = f"{r['db_cpu_cores']:.2f}" if db else "–"
                self.w(f"| {name} | {d} | {r['connections']} | {num(r['answered'])} | "
                       f"{num(r['throughput_rps'])} | {r.get('gaps_s', 0):.2f} | {r['errors']} | {num(r['status_2xx'])} | "
                       f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p99_9_ms']:.2f} | {r['max_ms']:.1f} | "
                       f"{r['a2d_p50_ms']:.1f} | {r['a2d_p99_ms']:.1f} | {r['a2d_max_ms']:.1f} | "
                       f"{mib(r['peak_rss_kb'])} | {r['kiroku_cpu_cores']:.2f} | "
                       f"{db_cpu} | {mib(r['db_rss_kb']) if db else '–'} | "
                       f"{num(r['accepted'])} | {num(r['rows'])} | "
                       f"{'yes' if r['ok'] else '**NO**'} |")
        self.w()
        self.w("Requests per second is answers over the time the runs took (`kiroku load`'s own "
               "elapsed time, summed); the gaps between runs, while the next run starts and "
               "connects, add up to the seconds given under \"gaps\".")
        self.w()

    def storage(self):
        self.w("## Storage per event")
        self.w()
        s = self.spool
        if s:
            self.w(f"Spool (`bench/spool_size.sh {s['events']}`): kiroku with `--durability process "
                   f"--flush-interval 60s --batch-max 1000000`, so no segment is deleted during the "
                   f"run, takes {num(s['events'])} events `GET /?name=m0..m15&value=SEQ` from "
                   f"`kiroku load`; then the spool holds {num(s['spool_bytes_on_disk'])} bytes in "
                   f"{s['segments']} segment file(s) (`kiroku_spool_bytes` says "
                   f"{num(s['spool_bytes_metric'])}): **{s['bytes_per_event']:.1f} bytes per event**, "
                   f"segment headers included. Rows after a graceful stop: {num(s['rows'])} "
                   f"({'all' if s['ok'] else '**NOT all**'}). A longer name adds its length.")
        else:
            self.w("Spool: " + ("failed" if "spool" in self.failed else "not run") + ".")
        self.w()
        self.w("Database, after the constant-rate runs (same events; SQLite: size of the file; "
               "MariaDB: InnoDB data and index length after `ANALYZE TABLE`):")
        self.w()
        self.w("| sink | durability | rows | bytes | bytes per row |")
        self.w("|---|---|---|---|---|")
        for k, name in SINKS:
            for d in MODES:
                r = self.rate[(k, d)]
                if r and r["rows"]:
                    self.w(f"| {name} | {d} | {num(r['rows'])} | {num(r['stored_bytes'])} | "
                           f"{r['stored_bytes'] / r['rows']:.1f} |")
        self.w()

    def mariadb(self):
        self.w("## MariaDB: the sink's bulk insert rate")
        self.w()
        if self.bulk:
            self.w(f"`build/bench/mysql_bulk_bench --method sink {self.params['bulk']}` against the "
                   "same kind of temporary MariaDB (`scripts/with-mariadb.sh`: 64 MiB buffer pool, "
                   "default `innodb_flush_log_at_trx_commit=1`), one transaction per batch, as the "
                   "sink writes them:")
            self.w()
            self.w("| batch (events) | median rows/s | best rows/s |")
            self.w("|---|---|---|")
            for batch, med, best in self.bulk:
                self.w(f"| {num(batch)} | {num(med)} | {num(best)} |")
        else:
            self.w("failed" if "bulk-mariadb" in self.failed else "not run")
        self.w()

    def postgresql(self):
        self.w("## PostgreSQL: the sink's bulk insert rate")
        self.w()
        if self.pgbulk:
            self.w(f"`build/bench/postgresql_bulk_bench {self.params['bulk']}` against a temporary "
                   "PostgreSQL 15 (`scripts/with-postgres.sh`: 32 MiB shared buffers, `fsync=off`, "
                   "`synchronous_commit=off`), one transaction per batch as the sink writes them "
                   "(COPY into the staging table, then INSERT ... ON CONFLICT DO NOTHING), the "
                   "events of the MariaDB table above:")
            self.w()
            self.w("| batch (events) | median rows/s | best rows/s |")
            self.w("|---|---|---|")
            for batch, med, best in self.pgbulk:
                self.w(f"| {num(batch)} | {num(med)} | {num(best)} |")
        else:
            self.w("failed" if "bulk-postgresql" in self.failed else "not run")
        self.w()

    def clickhouse(self):
        self.w("## ClickHouse: the sink's bulk insert rate")
        self.w()
        if self.chbulk:
            self.w(f"`build/bench/clickhouse_bulk_bench {self.params['bulk']}` against ClickHouse 18.16 "
                   "(`scripts/with-clickhouse.sh`), first one server, then two shards (`--url` with "
                   "`?shards=`), one RowBinary INSERT per shard and batch as the sink writes them, with "
                   "the read-back that accounts for every record; `client`: every event carries a "
                   "client id (one more table written first):")
            self.w()
            self.w("| shards | kind | batch (events) | median rows/s | best rows/s |")
            self.w("|---|---|---|---|---|")
            for shards, kind, batch, med, best in self.chbulk:
                self.w(f"| {shards} | {kind} | {num(batch)} | {num(med)} | {num(best)} |")
        else:
            self.w("failed" if "bulk-clickhouse" in self.failed else "not run")
        self.w()

    def files_rounds(self):
        """(rounds, downloads per round) of the files run."""
        f = self.files or {}
        return f.get("rounds", 1), f.get("gets", 1)

    def file_api(self):
        self.w("## Files: upload and download through the file API")
        self.w()
        f = self.files
        if f is None:
            self.w("failed" if "files" in self.failed else "not run")
        elif f["status"] == "missing":
            self.w("not measured: file API missing (`PUT /files/KEY` answered 404 in this run).")
        else:
            nrounds, ngets = self.files_rounds()
            self.w(f"`BENCH_FILE_ROUNDS={nrounds} BENCH_FILE_GETS={ngets} bench/files.sh {f['size_mib']}`: "
                   f"{f['size_mib']} MiB of random bytes, "
                   "`curl -T` to `PUT /files/KEY` (201, size and sha256 in the answer checked), "
                   "`GET /files/KEY` to /dev/null (timed) and once more checked against the sha256. "
                   "Stores: `--store file:///DIR` and `--store 's3://BUCKET?endpoint=...'` on s3rver "
                   "(`scripts/with-s3rver.sh`); the reference is curl to s3rver directly (SigV4): one "
                   "PUT and one GET, and for uploads also the same multipart upload kiroku makes "
                   "(8 MiB parts, 4 at once, with curl): s3rver assembles a multipart object by reading "
                   "every part back and writing the whole object again, which a single PUT does not "
                   "pay. `kiroku → s3rver, streamed` is the same store URL with "
                   "`&stream_put_max=5368709120&stream_get_max=5368709120`: an upload of known size goes "
                   "up as one PUT whose body is read from the part buffers as they fill, and a download "
                   "comes down as one GET that fills them in order, as curl's single PUT and GET do "
                   "(README, S3 URL options: the PUT is not retried once bytes are out and is only for "
                   "servers that reject a short body; the GET resumes after the last byte received). "
                   f"All kirokus run at once. Each of the {nrounds} rounds uploads once per path and "
                   f"downloads {ngets} times per path, curl's reference taking its turn with the kiroku "
                   "paths (the order rotates), then deletes what it stored. The ratio to curl is the "
                   "median of the paired ratios: each kiroku transfer against curl's in the same round "
                   "and turn, because s3rver's own speed moves by up to a third from one transfer to "
                   "the next (its CPU seconds per transfer are in the table). The curl multipart "
                   "reference runs once per placement and is compared by medians. Placement `shared` "
                   "leaves every process to the scheduler; `split` pins "
                   "s3rver (all its threads) to CPU 0 and kiroku and every curl to the other CPU, as an "
                   "S3 server on a machine of its own would be: s3rver is the bottleneck of every S3 "
                   "transfer here, and on 2 shared cores every CPU second kiroku spends (receiving, "
                   "hashing, sending: the kiroku CPU column) is taken from s3rver, which measures the "
                   "machine's size more than kiroku. The file store is timed "
                   "in `shared` only. Ratios compare with curl in the same placement. Peak RSS is "
                   "kiroku's VmHWM, reset before each transfer, the largest of the rounds.")
            self.w()
            self.w("| placement | path | direction | seconds (median) | transfers (s) | MiB/s "
                   "| ratio to curl → s3rver | paired ratios | ratio to curl multipart "
                   "| kiroku CPU (s, median) | s3rver CPU (s, median) | kiroku peak RSS (MiB) |")
            self.w("|---|---|---|---|---|---|---|---|---|---|---|---|")
            two = lambda x: f"{x:.2f}" if x is not None else "–"
            for t in f["transfers"]:
                ratio = f"**{t['ratio_to_direct']:.2f}**" if t["ratio_to_direct"] else "–"
                ratio_mp = f"**{t['ratio_to_multipart']:.2f}**" if t.get("ratio_to_multipart") else "–"
                rounds = ", ".join(f"{x:.2f}" for x in t.get("rounds", [t["seconds"]]))
                paired = ", ".join(f"{x:.2f}" for x in t.get("paired_ratios", [])) or "–"
                self.w(f"| {t.get('placement', 'shared')} | {t['store']} | {t['direction']} | {t['seconds']:.2f} "
                       f"| {rounds} | {t['mib_per_s']:.0f} | {ratio} | {paired} | {ratio_mp} "
                       f"| {two(t.get('kiroku_cpu_s'))} | {two(t.get('s3_cpu_s'))} | {mib(t['peak_rss_kb'])} |")
        self.w()

    def outage_section(self):
        self.w("## MariaDB stopped under load")
        self.w()
        o = self.outage
        if o is None:
            self.w("failed" if "outage" in self.failed else "not run")
            self.w()
            return
        self.w(f"`scripts/with-mariadb.sh bench/outage.sh {o['rate']:g} {o['before_s']} {o['outage_s']} "
               f"{o['after_s']}`: kiroku (MariaDB sink, `--durability process`, 1 IO thread) takes "
               f"{num(o['rate'])} requests/s from `kiroku load` (64 connections) for "
               f"{o['before_s'] + o['outage_s'] + o['after_s']} s; MariaDB is stopped {o['down_at_s']:.1f} s "
               f"in (a clean shutdown) and started again at {o['up_at_s']:.1f} s. RSS is sampled every "
               "100 ms; the backlog has drained when `kiroku_queue_events` is 0.")
        self.w()
        drain = f"{o['drain_s']:.1f}" if o["drain_s"] is not None else "not within 120 s"
        self.w("| answered | 2xx | errors | client p50 (ms) | client p99 (ms) | client max (ms) "
               "| RSS before (MiB) | RSS during the outage (MiB) | RSS after (MiB) | spool peak (MiB) "
               "| drained after restart (s) | accept→durable max (s) | accepted | rows | rows = accepted |")
        self.w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        self.w(f"| {num(o['answered'])} | {num(o['status_2xx'])} | {num(o['errors'])} | {o['p50_ms']:.2f} "
               f"| {o['p99_ms']:.2f} | {o['max_ms']:.1f} | {mib(o['rss_before_kb'])} | {mib(o['rss_during_kb'])} "
               f"| {mib(o['rss_after_kb'])} | {o['spool_peak_bytes'] / 1048576:.1f} | {drain} "
               f"| {o['a2d_max_ms'] / 1000:.1f} | {num(o['accepted'])} | {num(o['rows'])} "
               f"| {'yes' if o['rows'] == o['accepted'] else '**no**'} |")
        self.w()

    def scale_section(self):
        self.w("## Scale-out: instances behind haproxy on one MariaDB")
        self.w()
        x = self.scale
        if x is None:
            self.w("failed" if "scale" in self.failed else "not run")
            self.w()
            return
        self.w(f"`scripts/with-mariadb.sh bench/scale_out.sh {x['rounds']} {x['seconds']:g}`: N kiroku instances "
               "started with the same command line (each leases its instance number from the database), "
               "MariaDB sink, one table, `--durability process`, one IO thread each, behind haproxy running "
               "`deploy/haproxy.cfg` with one `server` line per instance (health-checked on `/readyz`). "
               f"{x['rounds']} alternating `wrk -t1 -c64 -d{x['seconds']:g}s` rounds against haproxy in front of "
               "nginx answering 204 (the same file, no health checks) and against haproxy in front of the "
               "instances; then every instance stops gracefully and the table is counted. The accept-to-durable "
               "p99 is the worst instance's (an upper bound of the whole's).")
        self.w()
        self.w(f"haproxy's own ceiling here: nginx alone {num(x['nginx_mean'])} requests/s, through haproxy "
               f"{num(x['haproxy_nginx_mean'])} ({x['haproxy_nginx_mean'] / x['nginx_mean']:.2f}).")
        self.w()
        self.w("| instances | haproxy → nginx (req/s) | haproxy → kiroku (req/s) | ratio | accept→durable p99 (ms) "
               "| kiroku CPU (cores, all instances) | haproxy CPU (cores) | instance numbers leased | accepted "
               "| rows | rows = accepted |")
        self.w("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in x["runs"]:
            self.w(f"| {r['instances']} | {num(r['ref_mean'])} | {num(r['kiroku_mean'])} | {r['ratio']:.2f} "
                   f"| {r['a2d_p99_ms']:.1f} | {r['kiroku_cpu_cores']:.2f} | {r['haproxy_cpu_cores']:.2f} "
                   f"| {r['instance_numbers_leased']} | {num(r['accepted'])} | {num(r['rows'])} "
                   f"| {'yes' if r['rows'] == r['accepted'] else '**no**'} |")
        self.w()
        self.w(f"On this {self.m0.get('nproc', '?')}-core machine wrk, haproxy, every instance and MariaDB share "
               "the same cores, so more instances cannot add throughput here: the table shows what running "
               "N instances costs and that nothing is lost or duplicated among them; on N machines each "
               "instance has the cores the single-instance figures above were measured with.")
        if any(r["a2d_p99_ms"] > 1000 for r in x["runs"]):
            self.w("At full load the instances' writer threads get what CPU wrk, haproxy and the IO threads "
                   "leave: with more than one instance their batches wait behind the load, and the "
                   "accept-to-durable p99 of seconds is that backlog being written once the load stops "
                   "(every accepted event is then a row).")
        self.w()

    def badrows_section(self):
        self.w("## Refused rows: 0.1 % bad events against none")
        self.w()
        x = self.badrows
        if x is None:
            self.w("failed" if "badrows" in self.failed else "not run")
            self.w()
            return
        self.w(f"`scripts/with-mariadb.sh bench/bad_rows.sh {x['rounds']} {x['seconds']:g} {x['every']}`: kiroku "
               "(MariaDB sink, `--durability process`, 1 IO thread) on a table whose `name` is `VARCHAR(5)`; "
               f"{x['rounds']} alternating `wrk -t1 -c64 -d{x['seconds']:g}s` rounds, each against a fresh kiroku "
               f"and table, with no bad events and with one request in {x['every']} named `toolongname`, which "
               "MariaDB refuses (1406) and kiroku dead-letters while storing the rest. Both use the same wrk "
               "Lua script. Transactions per batch are `kiroku_sink_writes_total` over the batches written.")
        self.w()
        self.w("Each refused row costs three transactions (the rows before it, the row alone, the rows "
               "after it; MariaDB names the row), so a batch with k refused rows takes 1 + 3k; at full load "
               "the writer falls behind while the load lasts and catches up after it (the drain column).")
        self.w()
        self.w("| refused events | req/s | ratio | sink transactions per batch | accept→durable p99 (ms) "
               "| backlog drained after the load (s) | kiroku CPU (cores) | accepted | rows | dead-lettered "
               "| rows + dead-lettered = accepted |")
        self.w("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, r in (("none", x["clean"]), (f"1 in {x['every']}", x["bad"])):
            self.w(f"| {name} | {num(r['rps'])} | {r['rps'] / x['clean']['rps']:.2f} | {r['writes_per_batch']:.2f} "
                   f"| {r['a2d_p99_ms']:.1f} | {r['drain_s']:.2f} | {r['cpu_cores']:.2f} | {num(r['accepted'])} "
                   f"| {num(r['rows'])} | {num(r['dead_lettered'])} "
                   f"| {'yes' if r['rows'] + r['dead_lettered'] == r['accepted'] else '**no**'} |")
        self.w()

    def load_check(self):
        self.w("## `kiroku load` against wrk")
        self.w()
        c = self.loadcheck
        if c is None or "targets" not in c:
            self.w("failed" if "loadcheck" in self.failed else "not run")
            self.w()
            return
        secs = f"{c['seconds']:g}"
        self.w(f"`bench/load_vs_wrk.sh {c['rounds']} {secs}`: `wrk -t1 -c64 -d{secs}s` and "
               f"`kiroku load --rate 0 --connections 64 --threads 1 --duration {secs}s` (its closed-loop "
               "mode) drive the same target as fast as it answers, alternating. On kiroku with "
               "`--durability sink` every answer waits for a database commit, so the server sets the pace "
               "and both tools must report the same throughput (the goal: within 10 %). nginx answering 204 "
               "is faster than one client thread, so there each tool's figure is its own cost per request "
               "(CPU per request: the tool's user + system time over the requests it made).")
        self.w()
        self.w("| target | wrk (req/s) | kiroku load (req/s) | ratio | wrk CPU per request (µs) "
               "| kiroku load CPU per request (µs) | errors or non-2xx |")
        self.w("|---|---|---|---|---|---|---|")
        names = {"server": "kiroku `sink` (server-bound)", "client": "nginx 204 (client-bound)"}
        for key in ("server", "client"):
            t = c["targets"][key]
            ratio = f"**{t['ratio']:.2f}**" if key == "server" else f"{t['ratio']:.2f}"
            self.w(f"| {names[key]} | {num(t['wrk_mean'])} | {num(t['load_mean'])} | {ratio} "
                   f"| {t['wrk_cpu_us']:.1f} | {t['load_cpu_us']:.1f} | {t['bad']} |")
        self.w()
        rounds = "; ".join(
            f"{names[k]}: " + ", ".join(f"{a:,.0f} / {b:,.0f}" for a, b in
                                        zip(c["targets"][k]["wrk_rps"], c["targets"][k]["load_rps"]))
            for k in ("server", "client"))
        self.w(f"Rounds (wrk / kiroku load, req/s): {rounds}.")
        self.w()

    def components(self):
        self.w("## Components")
        self.w()
        alloc = load(self.r, "alloc.log")
        if alloc is not None:
            passed = "alloc" not in self.failed
            self.w("Heap allocations per ingestion request: `test/http/alloc_test.cpp` counts "
                   "allocations on the server's IO thread over 8,000 steady-state requests (GET and "
                   "POST, `none` and `process`) and requires zero: "
                   + ("**passed, 0 allocations**." if passed else "**FAILED**."))
            self.w()
        for b in ("spool_bench", "metrics_bench", "multipart_bench"):
            text = load(self.r, f"micro-{b}.log")
            if text is None:
                continue
            self.w(f"`build/bench/{b}` (Google Benchmark):")
            self.w()
            self.w("```")
            self.w(text.rstrip())
            self.w("```")
            self.w()

    # ------------------------------------------------------------------
    def capacity(self):
        """The figures README's capacity section uses, each with its id."""
        figs = []

        def add(fid, what, sqlite, mariadb, source):
            figs.append((fid, what, sqlite, mariadb, source))

        def wrk_per_core(k):
            r = self.wrk[(k, "process")]
            return num(per_core(r["kiroku_mean"], r["kiroku_cpu_cores"])) if r else "–"

        def field(table, k, d, f, fmt):
            r = table[(k, d)]
            return fmt(r[f]) if r else "–"

        rate = num(float(self.params["rate"]))
        add("C1", f"events/s kiroku answered with {self.params.get('threads', '1')} IO thread(s), "
            "`wrk -t1 -c64`, `process`",
            field(self.wrk, "sqlite", "process", "kiroku_mean", num),
            field(self.wrk, "mariadb", "process", "kiroku_mean", num), "#maximum-throughput-against-nginx-wrk--t1--c64")
        add("C2", "events per second of kiroku CPU, saturated (C1 ÷ its CPU cores)",
            wrk_per_core("sqlite"), wrk_per_core("mariadb"), "#maximum-throughput-against-nginx-wrk--t1--c64")
        for d in ("process", "fsync"):
            add("C3" if d == "process" else "C4", f"kiroku CPU (cores) at {rate} events/s, `{d}`",
                field(self.rate, "sqlite", d, "kiroku_cpu_cores", lambda v: f"{v:.2f}"),
                field(self.rate, "mariadb", d, "kiroku_cpu_cores", lambda v: f"{v:.2f}"),
                "#the-seeds-test-a-constant-rate")
        add("C5", f"kiroku peak RSS (MiB) at {rate} events/s, `process`",
            field(self.rate, "sqlite", "process", "peak_rss_kb", mib),
            field(self.rate, "mariadb", "process", "peak_rss_kb", mib), "#the-seeds-test-a-constant-rate")
        sp = f"{self.spool['bytes_per_event']:.0f}" if self.spool else "–"
        add("C6", "spool bytes per event (short name, `process`/`fsync`)", sp, sp, "#storage-per-event")

        def per_row(k):
            r = self.rate[(k, "process")]
            return f"{r['stored_bytes'] / r['rows']:.0f}" if r and r["rows"] else "–"
        add("C7", "database bytes per stored event", per_row("sqlite"), per_row("mariadb"), "#storage-per-event")
        for d, fid in (("process", "C8"), ("fsync", "C9")):
            add(fid, f"MariaDB server CPU (cores) at {rate} events/s, `{d}`", "–",
                field(self.rate, "mariadb", d, "db_cpu_cores", lambda v: f"{v:.2f}"), "#the-seeds-test-a-constant-rate")
        add("C10", f"MariaDB server RSS (MiB) at {rate} events/s, `process`", "–",
            field(self.rate, "mariadb", "process", "db_rss_kb", mib), "#the-seeds-test-a-constant-rate")
        best = max(self.bulk, key=lambda b: b[1]) if self.bulk else None
        add("C11", "MariaDB: sink bulk insert rows/s (best batch size, median)", "–",
            f"{num(best[1])} (batch {num(best[0])})" if best else "–",
            "#mariadb-the-sinks-bulk-insert-rate")
        return figs

    def capacity_section(self, figs):
        self.w("## Capacity figures")
        self.w()
        self.w("The figures README.md's \"Capacity planning\" section is built from, each taken from "
               "a table above (the link).")
        self.w()
        self.w("| id | figure | SQLite | MariaDB | from |")
        self.w("|---|---|---|---|---|")
        for fid, what, s, m, src in figs:
            self.w(f"| {fid} | {what} | {s} | {m} | [table]({src}) |")
        self.w()

    def readme_block(self, figs):
        mach = self.m0
        note = ""
        if self.a.restricted == "1":
            note = (" Only part of the suite ran (a dash: not measured yet), so BENCHMARKS.md, which "
                    "only complete runs rewrite, does not show these figures yet.")
        out = [README_BEGIN,
               f"Measured by `bench/run.sh {self.a.mode}` on {mach.get('utc', '?')}: {mach.get('nproc', '?')} "
               f"cores ({mach.get('cpu', '?')}), load average {' '.join(mach.get('loadavg', [])[:1]) or '?'} "
               f"at the start. [BENCHMARKS.md](BENCHMARKS.md#capacity-figures) has the run, the "
               f"machine and the commands; the ids are its \"Capacity figures\".{note}",
               "",
               "| id | figure | SQLite | MariaDB |",
               "|---|---|---|---|"]
        for fid, what, s, m, src in figs:
            out.append(f"| [{fid}](BENCHMARKS.md{src}) | {what} | {s} | {m} |")
        out.append(README_END)
        return out

    # ------------------------------------------------------------------
    def plots(self):
        os.makedirs(self.a.plots, exist_ok=True)
        data = os.path.join(self.a.plots, "throughput.dat")
        rows = []
        for k, name in SINKS:
            for d in MODES:
                r = self.wrk[(k, d)]
                if r:
                    rows.append(f"\"{name}\\n{d}\" {r['nginx_mean']:.0f} {r['kiroku_mean']:.0f} {r['ratio']:.2f}")
        script = []
        if rows:
            with open(data, "w") as f:
                f.write("\n".join(rows) + "\n")
            script += [
                "set terminal pngcairo size 1100,520 font ',10'",
                f"set output '{os.path.join(self.a.plots, 'throughput.png')}'",
                f"set title 'Maximum throughput, wrk -t1 -c64 ({self.m0.get('nproc', '?')} cores, "
                f"{self.m0.get('utc', '')}); label: kiroku / nginx'",
                "set style data histograms", "set style histogram clustered gap 1",
                "set style fill solid 0.8 border -1", "set boxwidth 0.9", "set grid ytics",
                "set bmargin 5", "set xtics nomirror",
                "set ylabel 'requests/s'", "set yrange [0:*]", "set key top right",
                "set format y '%.0f'",
                f"plot '{data}' using 2:xtic(1) title 'nginx 204' lc rgb '#999999', "
                f"'' using 3 title 'kiroku' lc rgb '#1f77b4', "
                f"'' using ($0+0.17):3:(sprintf('%.2f', $4)) with labels offset 0,0.8 notitle",
                "unset output", "reset"]
        panels = [(k, name, d) for k, name in SINKS for d in MODES if self.rate[(k, d)]]
        if panels:
            cols = 4 if len(panels) > 1 else 1
            nrows = (len(panels) + cols - 1) // cols
            script += [
                f"set terminal pngcairo size {max(900, 300 * cols + 200)},{320 * nrows + 60} font ',9'",
                f"set output '{os.path.join(self.a.plots, 'latency.png')}'",
                f"set multiplot layout {nrows},{cols} title 'kiroku load, "
                f"{num(float(self.params['rate']))} requests/s: client latency (ms, log scale) of each "
                f"{self.params['segment']} run; x: seconds into the test'",
                "set logscale y", "set grid",
                "set key outside bottom center horizontal font ',8' samplen 2",
                "set format y '%g'"]
            for k, name, d in panels:
                path = os.path.join(self.a.plots, f"latency-{k}-{d}.dat")
                with open(path, "w") as f:
                    f.write("# middle of the run (s), p50 p90 p99 p99.9 max (ms)\n")
                    for s in self.rate[(k, d)]["segments"]:
                        f.write(f"{s['start_s'] + s['elapsed_s'] / 2:.2f} {max(s['p50'], 0.001)} {max(s['p90'], 0.001)} "
                                f"{max(s['p99'], 0.001)} {max(s['p99_9'], 0.001)} {max(s['max'], 0.001)}\n")
                script += [f"set title '{name}, {d}'",
                           f"plot '{path}' using 1:2 with linespoints title 'p50', "
                           f"'' using 1:3 with linespoints title 'p90', "
                           f"'' using 1:4 with linespoints title 'p99', "
                           f"'' using 1:6 with linespoints title 'max'"]
            script += ["unset multiplot", "unset output"]
        if not script:
            return True
        gp = os.path.join(self.a.plots, "plots.gp")
        with open(gp, "w") as f:
            f.write("\n".join(script) + "\n")
        r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
        if r.returncode != 0:
            print("report.py: gnuplot failed:\n" + r.stderr, file=sys.stderr)
            return False
        for leftover in glob.glob(os.path.join(self.a.plots, "*.dat")) + [gp]:
            os.remove(leftover)
        return True

    def write(self):
        ok = self.plots()
        self.header()
        self.commands()
        self.throughput()
        self.constant()
        self.storage()
        self.mariadb()
        self.postgresql()
        self.clickhouse()
        self.outage_section()
        self.scale_section()
        self.badrows_section()
        self.file_api()
        self.load_check()
        self.components()
        figs = self.capacity()
        self.capacity_section(figs)
        with open(self.a.out, "w") as f:
            f.write("\n".join(self.lines).rstrip() + "\n")
        with open(self.a.readme) as f:
            text = f.read()
        if README_BEGIN not in text or README_END not in text:
            print(f"report.py: {self.a.readme} has no capacity figure markers", file=sys.stderr)
            return False
        head, rest = text.split(README_BEGIN, 1)
        _, tail = rest.split(README_END, 1)
        with open(self.a.readme, "w") as f:
            f.write(head + "\n".join(self.readme_block(figs)) + tail)
        return ok


def seconds(d):
    d = str(d)
    if d.endswith("ms"):
        return float(d[:-2]) / 1000
    if d.endswith("s"):
        return float(d[:-1])
    if d.endswith("m"):
        return float(d[:-1]) * 60
    return float(d)


def per_core(rps, cores):
    return rps / cores if cores else None


def parse_clickhouse_bulk(text):
    """(shards, kind, batch, median rows/s, best rows/s) of clickhouse_bulk_bench's lines."""
    if not text:
        return []
    out, shards = [], 0
    for line in text.splitlines():
        m = re.match(r"^shards (\d+),", line)
        if m:
            shards = int(m.group(1))
            continue
        m = re.match(r"^(plain|client)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m:
            out.append((shards, m.group(1), int(m.group(2)), float(m.group(3)), float(m.group(4))))
    return out


def parse_bulk(text):
    """(batch, median rows/s, best rows/s) of mysql_bulk_bench's `sink` lines."""
    if not text:
        return []
    out = []
    for line in text.splitlines():
        m = re.match(r"^sink\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m:
            out.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--plots", required=True)
    p.add_argument("--readme", required=True)
    p.add_argument("--restricted", default="0")
    ok = Report(p.parse_args()).write()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
