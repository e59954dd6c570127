#!/usr/bin/env python3
"""Helpers for bench/many_origins.sh: the three proxies' configurations, and the report.

Subcommands (output on stdout or in the named file, errors on stderr, exit 0 on success):
  config KIND READY LISTEN_PORT DIR OUT
        write the configuration of KIND (weir, nginx, haproxy, haproxy-unshared; weir-h2c,
        haproxy-h2c, haproxy-unshared-h2c: the same to h2c origins) to OUT: listen on
        127.0.0.1:LISTEN_PORT, one upstream per origin port listed in READY (the JSON file
        origins.py writes), requests for /o/<i>/ to origin i; DIR holds the proxy's
        pid, logs and temp files
  report ROWS MD META
        print the results table and write it as Markdown to MD, META (Markdown) first;
        ROWS is a TSV file: proxy, status (ok, failed, skipped), result JSON (from
        sparse_load.py) or empty, note. Ratios compare weir with the other rows of its
        variant: rows named *-h2c with weir-h2c, the others with weir.
"""
import json
import os
import sys

WORKERS = 2  # worker threads / processes of every proxy
H2C = "-h2c"  # the suffix of the rows whose origins speak h2c (origins.py --h2c)


# ---------------------------------------------------------------- configurations

def _ports(ready):
    with open(ready) as f:
        return json.load(f)["ports"]


def config_weir(ports, listen, d, protocol=None):
    # Everything not set here is weir's default: upstream_keepalive 128 idle connections per
    # backend and worker, upstream_idle 60 s (the origin's 2 s closes them first).
    # protocol "h2c": every upstream speaks HTTP/2 with prior knowledge; each worker then
    # multiplexes its requests to an origin over its own connections, and opens another only
    # when every one it has is at the origin's SETTINGS_MAX_CONCURRENT_STREAMS.
    out = ["# weir under bench/many_origins.sh: %d origins%s, %d worker threads." % (
               len(ports), ", upstreams protocol: %s" % protocol if protocol else "", WORKERS),
           "server:",
           "  threads: %d" % WORKERS,
           "  access_log: off",
           "  log_level: warn",
           "  pid_file: %s/weir.pid" % d]
    # BENCH_WEIR_SERVER: extra lines for weir's server section, e.g.
    # "upstream_pool: {share_after: 20ms}" to try the pool's settings.
    out += ["  " + line for line in os.environ.get("BENCH_WEIR_SERVER", "").split("\n") if line]
    out += [
           "listeners:",
           "  - 127.0.0.1:%d" % listen,
           "routes:"]
    for i in range(len(ports)):
        out.append("  - match: {path_prefix: /o/%d/}" % i)
        out.append("    upstream: o%d" % i)
    out.append("upstreams:")
    for i, p in enumerate(ports):
        out.append("  o%d:" % i)
        out.append("    backends: [127.0.0.1:%d]" % p)
        if protocol:
            out.append("    protocol: %s" % protocol)
    return "\n".join(out) + "\n"


def config_nginx(ports, listen, d):
    # One upstream block per origin with "keepalive 16": at most 16 idle connections per
    # origin *per worker process*, which is the point of the comparison. "reuseport" gives each
    # worker its own listening socket, as weir's default does, so that the client connections
    # are spread over both workers by the kernel's hash (without it, a burst of 32 connects
    # can land mostly on one worker, which would make nginx look like one shared pool).
    out = ["# nginx under bench/many_origins.sh: %d origins, %d worker processes." % (len(ports), WORKERS),
           "worker_processes %d;" % WORKERS,
           "daemon off;",
           "master_process on;",
           "pid %s/nginx.pid;" % d,
           "error_log %s/error.log warn;" % d,
           "events {",
           "    worker_connections 4096;",
           "}",
           "http {",
           "    access_log off;",
           "    keepalive_requests 10000000;",
           "    keepalive_timeout 300s;",
           "    client_body_temp_path %s/body;" % d,
           "    proxy_temp_path %s/proxy;" % d,
           "    fastcgi_temp_path %s/fastcgi;" % d,
           "    uwsgi_temp_path %s/uwsgi;" % d,
           "    scgi_temp_path %s/scgi;" % d]
    for i, p in enumerate(ports):
        out.append("    upstream o%d { server 127.0.0.1:%d; keepalive 16; }" % (i, p))
    out += ["    server {",
            "        listen 127.0.0.1:%d reuseport backlog=4096;" % listen,
            "        proxy_http_version 1.1;",
            '        proxy_set_header Connection "";']
    for i in range(len(ports)):
        out.append("        location /o/%d/ { proxy_pass http://o%d; }" % (i, i))
    out += ["    }", "}"]
    return "\n".join(out) + "\n"


def config_haproxy(ports, listen, d, shared=True, h2=False):
    # "http-reuse always": an idle server connection may carry any client's request. HAProxy
    # keeps idle connections per thread but a thread takes one over from another thread when
    # it has none of its own (tune.idle-pool.shared, on by default), so its pool is in effect
    # shared by both threads. shared=False turns that off: the control row
    # "haproxy-unshared", the same proxy with one pool per thread. h2=True: "proto h2" on every
    # server line, HTTP/2 with prior knowledge to the origins (the *-h2c rows).
    out = ["# HAProxy under bench/many_origins.sh: %d origins%s, %d threads%s." % (
               len(ports), ", servers proto h2" if h2 else "", WORKERS,
               "" if shared else ", idle pools not shared between threads"),
           "global",
           "    nbthread %d" % WORKERS,
           "    maxconn 4000",
           "    pidfile %s/haproxy.pid" % d]
    if not shared:
        out.append("    tune.idle-pool.shared off")
    out += ["",
           "defaults",
           "    mode http",
           "    option http-keep-alive",
           "    http-reuse always",
           "    timeout connect 5s",
           "    timeout client 60s",
           "    timeout server 60s",
           "    timeout http-request 10s",
           "    timeout http-keep-alive 60s",
           "",
           "frontend fe",
           "    bind 127.0.0.1:%d" % listen]
    for i in range(len(ports)):
        out.append("    use_backend o%d if { path_beg /o/%d/ }" % (i, i))
    for i, p in enumerate(ports):
        out += ["", "backend o%d" % i, "    server s 127.0.0.1:%d%s" % (p, " proto h2" if h2 else "")]
    return "\n".join(out) + "\n"


CONFIGS = {"weir": config_weir, "nginx": config_nginx, "haproxy": config_haproxy,
           "haproxy-unshared": lambda ports, listen, d: config_haproxy(ports, listen, d, shared=False),
           # h2c origins; nginx has no such row (it cannot proxy to HTTP/2 origins)
           "weir" + H2C: lambda ports, listen, d: config_weir(ports, listen, d, protocol="h2c"),
           "haproxy" + H2C: lambda ports, listen, d: config_haproxy(ports, listen, d, h2=True),
           "haproxy-unshared" + H2C: lambda ports, listen, d: config_haproxy(ports, listen, d, shared=False,
                                                                              h2=True)}


def cmd_config(kind, ready, listen, d, out):
    text = CONFIGS[kind](_ports(ready), int(listen), d)
    with open(out, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- report

def _rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            proxy, status, result, note = (line.split("\t") + ["", "", "", ""])[:4]
            res = None
            if status == "ok" and result:
                with open(result) as rf:
                    res = json.load(rf)
            rows.append({"proxy": proxy, "status": status, "res": res, "note": note})
    return rows


def _derive(r):
    """Figures of one row, None where not measured."""
    res = r["res"]
    d = dict.fromkeys(("sent", "ok", "errors", "conns", "rpc", "reused", "open_end",
                       "p50", "p99", "cpu_us", "oreq", "spread"))
    if res is None:
        d["errors_text"] = r["status"].upper() + (": " + r["note"] if r["note"] else "")
        return d
    m, o = res["measured"], res["origin"]
    errs = dict(m["errors"])
    for k, v in m["status"].items():
        if not k.startswith("2"):
            errs["status " + k] = v
    if res.get("unfinished"):
        errs["unfinished"] = res["unfinished"]
    tot = sum(errs.values())
    d["errors_text"] = str(tot) if tot == 0 else "%d (%s)" % (
        tot, ", ".join("%s %d" % (k.replace("_", " "), v) for k, v in sorted(errs.items())))
    d["sent"], d["ok"], d["errors"] = m["sent"], m["completed"], tot
    d["conns"], d["oreq"] = o["accepted"], o["requests"]
    d["rpc"] = o["requests"] / o["accepted"] if o["accepted"] else None
    d["reused"] = 100.0 * (1 - o["accepted"] / o["requests"]) if o["requests"] else None
    d["open_end"] = o["open_end"]
    d["p50"], d["p99"] = m["p50_ms"], m["p99_ms"]
    if "proxy_cpu_s" in res and m["sent"]:
        d["cpu_us"] = res["proxy_cpu_s"] / m["sent"] * 1e6
    d["spread"] = "+".join(map(str, res.get("client_conns_per_process", [])))
    return d


COLS = [("proxy", "proxy", None), ("requests", "sent", "%d"), ("2xx", "ok", "%d"),
        ("origin requests", "oreq", "%d"), ("upstream conns opened", "conns", "%d"),
        ("requests per upstream conn", "rpc", "%.1f"), ("reused %", "reused", "%.1f"),
        ("upstream conns open at end", "open_end", "%d"),
        ("p50 ms", "p50", "%.2f"), ("p99 ms", "p99", "%.2f"),
        ("proxy CPU µs per req", "cpu_us", "%.0f"), ("client errors", "errors_text", None)]


def _ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else "%.2f×" % (a / b)


def cmd_report(rows_path, md, meta):
    rows = _rows(rows_path)
    table = []
    for r in rows:
        d = _derive(r)
        cells = []
        for _, key, fmt in COLS:
            if key == "proxy":
                cells.append(r["proxy"])
            elif fmt is None:
                cells.append(d[key])
            else:
                cells.append("—" if d[key] is None else fmt % d[key])
        table.append((r, d, cells))
    heads = [h for h, _, _ in COLS]
    right = {i for i, (_, _, fmt) in enumerate(COLS) if fmt is not None}
    widths = [max([len(h)] + [len(c[2][i]) for c in table]) for i, h in enumerate(heads)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(heads))
    print("  ".join("-" * w for w in widths))
    for _, _, cells in table:
        print(line(cells))

    by = {r["proxy"]: d for r, d, _ in table}
    ratio_rows = []
    for other in by:
        # weir against the other rows of the same variant (HTTP/1.1 or h2c origins)
        base = "weir" + H2C if other.endswith(H2C) else "weir"
        if other != base:
            w, o = by.get(base, {}), by[other]
            ratio_rows.append([base + "/" + other, _ratio(w.get("conns"), o.get("conns")),
                               _ratio(w.get("rpc"), o.get("rpc"))])
    spread = ", ".join("%s %s" % (r["proxy"], d["spread"]) for r, d, _ in table if d["spread"])
    if spread:
        spread = ("Client connections held by each process of the proxy at the start of the measured "
                  "part (nginx: one number per worker; weir and HAProxy run their workers as threads "
                  "of one process): %s." % spread)
    rheads = ["ratio", "upstream conns opened (lower: better reuse)", "requests per upstream conn"]
    if ratio_rows:
        rw = [max([len(h)] + [len(x[i]) for x in ratio_rows]) for i, h in enumerate(rheads)]
        print()
        print("  ".join(h.ljust(n) for h, n in zip(rheads, rw)))
        print("  ".join("-" * n for n in rw))
        for x in ratio_rows:
            print("  ".join(c.ljust(n) for c, n in zip(x, rw)))
    if spread:
        print()
        print(spread)

    out = []
    if meta and os.path.exists(meta):
        with open(meta) as f:
            out.append(f.read().rstrip() + "\n")
    out.append("| " + " | ".join(heads) + " |")
    out.append("|" + "|".join("---:" if i in right else "---" for i in range(len(heads))) + "|")
    for _, _, cells in table:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if ratio_rows:
        out += ["", "| " + " | ".join(rheads) + " |", "|---|---:|---:|"]
        out += ["| " + " | ".join(x) + " |" for x in ratio_rows]
    if spread:
        out += ["", spread]
    tmp = md + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, md)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "config" and len(args) == 5 and args[0] in CONFIGS:
        cmd_config(*args)
    elif cmd == "report" and len(args) == 3:
        cmd_report(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
