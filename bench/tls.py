#!/usr/bin/env python3
"""Helpers for bench/tls.sh (TLS termination); the /proc accounting is bench/lib.py's.

Subcommands (output on stdout, errors on stderr, exit 0 on success):
  wait-https URL FILE SECS PID CAFILE
                         poll URL over TLS 1.3 (certificate checked against CAFILE, name
                         "localhost") until it answers 200 with FILE's bytes; prints
                         "<version> <cipher>" of that connection
  sclient FIRST [SECOND] parse two `openssl s_client` runs (-sess_out, then -sess_in):
                         prints "tickets=N resumed=yes|no|none protocol=P cipher=C
                         group=G status=S" (none: the client got no session to offer)
  h2load FILE            parse h2load's output: prints "key=value ..." (done, succeeded,
                         failed, errored, timeout, s2xx, s3xx, s4xx, s5xx, secs, protocol,
                         cipher, group)
  tcp-opens              TCP passive opens of this network namespace (/proc/net/snmp)
  report TSV MD [META]   print the two tables and the ratios, write them as Markdown to MD
  testssl-report MD META NAME=JSON...
                         bench/testssl.sh's summary: findings per severity for each server
                         side by side, then every finding rated MEDIUM or above
"""
import json
import http.client
import os
import re
import socket
import ssl
import sys
import time


def cmd_wait_https(url, path, secs, pid, cafile):
    with open(path, "rb") as f:
        want = f.read()
    assert url.startswith("https://")
    hostport, _, rest = url[len("https://"):].partition("/")
    host, _, port = hostport.partition(":")
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    deadline = time.monotonic() + float(secs)
    last = "no attempt"
    while time.monotonic() < deadline:
        if not os.path.exists("/proc/%d" % int(pid)):
            print("process %s exited before serving %s" % (pid, url), file=sys.stderr)
            return 1
        try:
            raw = socket.create_connection((host, int(port)), timeout=2)
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            c = http.client.HTTPConnection(host, int(port), timeout=2)
            c.sock = s
            c.request("GET", "/" + rest)
            r = c.getresponse()
            body = r.read()
            version, cipher = s.version(), s.cipher()[0]
            c.close()
            if r.status == 200 and body == want:
                print(version, cipher)
                return 0
            last = "status %d, %d body bytes%s (want 200 and the %d bytes of %s)" % (
                r.status, len(body), ", content differs" if len(body) == len(want) else "",
                len(want), os.path.basename(path))
        except (OSError, http.client.HTTPException) as e:
            last = "%s: %s" % (type(e).__name__, e)
        time.sleep(0.1)
    print("not ready after %ss: %s" % (secs, last), file=sys.stderr)
    return 1


def cmd_sclient(first, second=None):
    """FIRST: a full handshake and one request with -sess_out; SECOND (when the client got a
    session to save): the same with -sess_in, which offers that session for resumption."""
    with open(first, errors="replace") as f:
        text = f.read()
    tickets = len(re.findall(r"New Session Ticket arrived", text))
    m = re.search(r"^(?:New|Reused), (\S+), Cipher is (\S+)", text, re.M)
    g = re.search(r"^Server Temp Key: ([^,\n]+)", text, re.M)
    st = re.search(r"^HTTP/1\.1 (\d+)", text, re.M)
    resumed = "none"
    if second and os.path.exists(second):
        with open(second, errors="replace") as f:
            t2 = f.read()
        resumed = "yes" if re.search(r"^Reused, ", t2, re.M) else "no" if re.search(r"^New, ", t2, re.M) else "?"
    print("tickets=%d resumed=%s protocol=%s cipher=%s group=%s status=%s" % (
        tickets, resumed, m.group(1) if m else "?", m.group(2) if m else "?",
        g.group(1).strip() if g else "?", st.group(1) if st else "?"))


def cmd_h2load(path):
    with open(path, errors="replace") as f:
        text = f.read()
    out = {}
    m = re.search(r"^finished in ([0-9.]+)(ms|s),", text, re.M)
    if m:
        out["secs"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if m:
        for k, v in zip(("total", "started", "done", "succeeded", "failed", "errored", "timeout"),
                        m.groups()):
            out[k] = int(v)
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m:
        for k, v in zip(("s2xx", "s3xx", "s4xx", "s5xx"), m.groups()):
            out[k] = int(v)
    for key, pat in (("protocol", r"^TLS Protocol: (\S+)"), ("cipher", r"^Cipher: (\S+)"),
                     ("group", r"^Server Temp Key: (\S+)")):
        m = re.search(pat, text, re.M)
        out[key] = m.group(1) if m else "?"
    if "secs" not in out or "done" not in out or "s2xx" not in out:
        print("cannot parse h2load's output", file=sys.stderr)
        return 1
    print(" ".join("%s=%s" % kv for kv in out.items()))
    return 0


def cmd_tcp_opens():
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    head, vals = rows[0], rows[1]
    print(vals[head.index("PassiveOpens")])


# ---------------------------------------------------------------- report

FIELDS = ["scenario", "proxy", "status", "requests", "duration_s", "cpu_s", "origin_cpu_s",
          "other_cpu_s", "rss_peak_kib", "conns", "errors", "err_detail", "p50_us", "p99_us",
          "tls", "note"]


def _load(tsv):
    rows = []
    with open(tsv) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            vals = line.split("\t")
            vals += [""] * (len(FIELDS) - len(vals))
            rows.append(dict(zip(FIELDS, vals)))
    return rows


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _derive(r):
    d = {}
    req, dur, cpu = _num(r["requests"]), _num(r["duration_s"]), _num(r["cpu_s"])
    ok = r["status"] == "ok" and bool(req) and bool(dur) and cpu is not None
    d["ok"] = ok
    d["rate"] = req / dur if ok else None
    # keep-alive: CPU-seconds per 100k requests; handshakes: CPU-milliseconds per 1000.
    d["cpu"] = (cpu / req * 1e5 if r["scenario"] == "keepalive" else cpu * 1e3 / req * 1e3) if ok else None
    d["cpupct"] = cpu / dur * 100 if ok else None
    ocpu, oth = _num(r["origin_cpu_s"]), _num(r["other_cpu_s"])
    d["ocpupct"] = ocpu / dur * 100 if ok and ocpu is not None else None
    d["otherpct"] = max(0.0, oth / dur * 100) if ok and oth is not None else None
    peak = _num(r["rss_peak_kib"])
    d["peak"] = peak / 1024 if ok and peak else None
    d["conns"] = _num(r["conns"]) if ok else None
    d["p50"] = _num(r["p50_us"]) / 1000 if ok and _num(r["p50_us"]) is not None else None
    d["p99"] = _num(r["p99_us"]) / 1000 if ok and _num(r["p99_us"]) is not None else None
    if ok:
        n = int(r["errors"] or 0)
        d["errors"] = "0" if n == 0 else "%d (%s)" % (n, r["err_detail"])
    else:
        d["errors"] = r["status"].upper() + (": " + r["note"] if r["note"] else "")
    d["tls"] = r["tls"]
    return d


def _f(v, fmt):
    return "—" if v is None else fmt % v


TABLES = {
    "keepalive": ("HTTP/1.1 keep-alive over TLS 1.3 (wrk)",
                  [("proxy", "proxy", None), ("req/s", "rate", "%.0f"),
                   ("CPU-s/100k req", "cpu", "%.2f"), ("proxy CPU %", "cpupct", "%.0f"),
                   ("origin CPU %", "ocpupct", "%.0f"), ("other CPU %", "otherpct", "%.0f"),
                   ("RSS MiB peak", "peak", "%.1f"), ("p50 ms", "p50", "%.2f"),
                   ("p99 ms", "p99", "%.2f"), ("TLS", "tls", None), ("errors", "errors", None)]),
    "handshake": ("Full TLS 1.3 handshakes, one request per connection (h2load)",
                  [("proxy", "proxy", None), ("handshakes/s", "rate", "%.0f"),
                   ("CPU-ms/1000 handshakes", "cpu", "%.0f"), ("proxy CPU %", "cpupct", "%.0f"),
                   ("origin CPU %", "ocpupct", "%.0f"), ("other CPU %", "otherpct", "%.0f"),
                   ("TCP conns accepted", "conns", "%.0f"), ("TLS", "tls", None),
                   ("errors", "errors", None)]),
}
RATIOS = {"keepalive": ("CPU per 100k req", "req/s"), "handshake": ("CPU per handshake", "handshakes/s")}
GOAL = 0.8


def _ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else "%.2f×" % (a / b)


def _plain(heads, rows, right):
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(heads), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return out


def _md(heads, rows, right):
    out = ["| " + " | ".join(heads) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(heads))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def cmd_report(tsv, md, meta=None):
    rows = _load(tsv)
    text, mdout = [], []
    if meta and os.path.exists(meta):
        with open(meta) as f:
            mdout.append(f.read().rstrip() + "\n")
    ratio_rows, goal_lines = [], []
    for sc, (title, cols) in TABLES.items():
        sel = [r for r in rows if r["scenario"] == sc]
        if not sel:
            continue
        heads = [h for h, _, _ in cols]
        right = {i for i, (_, _, fmt) in enumerate(cols) if fmt}
        cells, by = [], {}
        for r in sel:
            d = _derive(r)
            by[r["proxy"]] = d
            cells.append([r["proxy"] if k == "proxy" else d[k] if fmt is None else _f(d[k], fmt)
                          for _, k, fmt in cols])
        text += [title] + _plain(heads, cells, right) + [""]
        mdout += ["**" + title + "**", ""] + _md(heads, cells, right) + [""]
        w = by.get("weir", {})
        for other in ("nginx", "haproxy"):
            o = by.get(other, {})
            ratio_rows.append([sc, "weir/" + other, _ratio(w.get("cpu"), o.get("cpu")),
                               _ratio(w.get("rate"), o.get("rate"))])
        n = by.get("nginx", {})
        if w.get("cpu") is not None and n.get("cpu") is not None:
            r = w["cpu"] / n["cpu"]
            goal_lines.append("%s: weir/nginx CPU %.2f× (goal ≤ %.2f×): %s" % (
                sc, r, GOAL, "met" if r <= GOAL else "NOT met"))
    rheads = ["scenario", "ratio", "CPU per unit of work", "rate"]
    text += ["Ratios (CPU: lower is better for weir; rate: higher is better)"]
    text += _plain(rheads, ratio_rows, set()) + [""] + goal_lines
    mdout += ["Ratios (CPU per request or per handshake: lower is better for weir; req/s and "
              "handshakes/s: higher is better):", ""]
    mdout += _md(rheads, ratio_rows, {2, 3}) + [""]
    mdout += ["- " + g for g in goal_lines]
    print("\n".join(text))
    tmp = md + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(mdout).rstrip() + "\n")
    os.replace(tmp, md)


# ---------------------------------------------------------------- testssl summary

SEVERITIES = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "OK", "INFO"]
SERIOUS = ("CRITICAL", "HIGH", "MEDIUM")


def cmd_testssl_report(md, meta, *pairs):
    runs = []
    for p in pairs:
        name, _, path = p.partition("=")
        with open(path) as f:
            runs.append((name, json.load(f)))
    names = [n for n, _ in runs]
    counts = {}
    for name, items in runs:
        c = {}
        for it in items:
            c[it.get("severity", "?")] = c.get(it.get("severity", "?"), 0) + 1
        counts[name] = c
    extra = sorted({k for c in counts.values() for k in c} - set(SEVERITIES))
    rows = [[sev] + [str(counts[n].get(sev, 0)) for n in names] for sev in SEVERITIES + extra]
    heads = ["severity"] + names
    text = ["Findings by severity (testssl's JSON; WARN: a check testssl could not complete, "
            "not a rating)"] + _plain(heads, rows, set(range(1, len(heads)))) + [""]
    mdout = []
    if meta and os.path.exists(meta):
        with open(meta) as f:
            mdout.append(f.read().rstrip() + "\n")
    mdout += ["Findings by severity (testssl's JSON; WARN is a check testssl could not complete, "
              "not a rating):", ""] + _md(heads, rows, set(range(1, len(heads)))) + [""]
    for name, items in runs:
        serious = [it for it in items if it.get("severity") in SERIOUS]
        serious.sort(key=lambda it: SEVERITIES.index(it["severity"]))
        warns = [it for it in items if it.get("severity") == "WARN"]
        title = "%s: %d finding%s rated MEDIUM or above" % (name, len(serious), "" if len(serious) == 1 else "s")
        text.append(title + (":" if serious else ""))
        mdout.append("**" + title + "**" + (":" if serious else ""))
        if serious:
            mdout.append("")
        for it in serious:
            text.append("  %-8s %-28s %s" % (it["severity"], it["id"], it["finding"]))
            mdout.append("- %s `%s`: %s" % (it["severity"], it["id"], it["finding"].replace("|", "\\|")))
        if warns:
            w = "; ".join("%s: %s" % (it["id"], it["finding"]) for it in warns)
            text.append("  (WARN, not rated: %s)" % w)
            mdout += ["", "(WARN, not rated: %s)" % w]
        text.append("")
        mdout.append("")
    print("\n".join(text).rstrip())
    tmp = md + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(mdout).rstrip() + "\n")
    os.replace(tmp, md)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "wait-https":
        return cmd_wait_https(*args)
    if cmd == "sclient":
        cmd_sclient(*args)
    elif cmd == "h2load":
        return cmd_h2load(*args)
    elif cmd == "tcp-opens":
        cmd_tcp_opens()
    elif cmd == "report":
        cmd_report(*args)
    elif cmd == "testssl-report":
        cmd_testssl_report(*args)
    else:
        print("unknown subcommand %r" % cmd, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
