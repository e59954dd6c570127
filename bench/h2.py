#!/usr/bin/env python3
"""Helpers for bench/h2.sh (HTTP/2); the /proc accounting is bench/lib.py's.

Subcommands (output on stdout, errors on stderr, exit 0 on success):
  wait-h2 URL FILE SECS PID NGHTTP
                         poll URL with nghttp (HTTP/2 only: ALPN h2 over https, prior
                         knowledge over http) until it answers 200 with FILE's bytes
  h2load FILE            parse h2load's output: prints "key=value ..." (done, succeeded,
                         failed, errored, timeout, s2xx..s5xx, secs, mean_ms, max_ms,
                         data_bytes, protocol, cipher, group, alpn)
  sample-conns PORT INTERVAL MAXSECS OUT
                         every INTERVAL s, until killed or MAXSECS pass, append to OUT the
                         number of established TCP connections to 127.0.0.1:PORT
                         (`ss -Htn state established dport = :PORT`: the proxy's side of
                         its origin connections, not the origin's accepted sockets)
  accepts PORT           the "accepts" counter of the nginx stub_status at 127.0.0.1:PORT
                         (connections that nginx accepted, this request's included)
  report TSV MD [META]   print the two tables and the ratios, write them as Markdown to MD
"""
import http.client
import os
import re
import subprocess
import sys
import time


def cmd_wait_h2(url, path, secs, pid, nghttp):
    with open(path, "rb") as f:
        want = f.read()
    deadline = time.monotonic() + float(secs)
    last = "no attempt"
    while time.monotonic() < deadline:
        if not os.path.exists("/proc/%d" % int(pid)):
            print("process %s exited before serving %s" % (pid, url), file=sys.stderr)
            return 1
        try:
            # nghttp prints the response body on stdout, and fails when h2 is not spoken.
            p = subprocess.run([nghttp, "--timeout=2", url], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=5)
            if p.returncode == 0 and p.stdout == want:
                return 0
            err = p.stderr.decode(errors="replace").strip().splitlines()
            last = "nghttp exit %d, %d body bytes%s%s" % (
                p.returncode, len(p.stdout),
                ", content differs" if len(p.stdout) == len(want) else "",
                (": " + err[-1]) if err else "")
        except (OSError, subprocess.SubprocessError) as e:
            last = "%s: %s" % (type(e).__name__, e)
        time.sleep(0.1)
    print("not ready after %ss: %s" % (secs, last), file=sys.stderr)
    return 1


def _ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


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
    # time for request:   min   max   mean   sd   +/- sd
    m = re.search(r"^time for request:\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)\s+"
                  r"([0-9.]+)(us|ms|s)", text, re.M)
    if m:
        out["max_ms"] = "%.2f" % _ms(m.group(3), m.group(4))
        out["mean_ms"] = "%.2f" % _ms(m.group(5), m.group(6))
    m = re.search(r"^traffic: .*?\((\d+)\) data", text, re.M)
    if m:
        out["data_bytes"] = int(m.group(1))
    for key, pat in (("protocol", r"^TLS Protocol: (\S+)"), ("cipher", r"^Cipher: (\S+)"),
                     ("group", r"^Server Temp Key: (\S+)"),
                     ("alpn", r"^Application protocol: (\S+)")):
        m = re.search(pat, text, re.M)
        out[key] = m.group(1) if m else "?"
    if "secs" not in out or "done" not in out or "s2xx" not in out:
        print("cannot parse h2load's output", file=sys.stderr)
        return 1
    print(" ".join("%s=%s" % kv for kv in out.items()))
    return 0


def cmd_sample_conns(port, interval, maxsecs, out):
    deadline = time.monotonic() + float(maxsecs)
    cmd = ["ss", "-Htn", "state", "established", "dport", "=", ":%d" % int(port)]
    while time.monotonic() < deadline:
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=5)
            n = len([ln for ln in p.stdout.splitlines() if ln.strip()])
        except (OSError, subprocess.SubprocessError):
            n = -1
        with open(out, "a") as f:
            f.write("%d\n" % n)
        time.sleep(float(interval))
    return 0


def cmd_accepts(port):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    c.request("GET", "/")
    body = c.getresponse().read().decode()
    c.close()
    # "Active connections: N \nserver accepts handled requests\n A H R \n..."
    m = re.search(r"server accepts handled requests\s+(\d+)", body)
    if not m:
        print("no stub_status at port %s" % port, file=sys.stderr)
        return 1
    print(m.group(1))
    return 0


# ---------------------------------------------------------------- report

FIELDS = ["scenario", "proxy", "status", "requests", "duration_s", "cpu_s", "origin_cpu_s",
          "other_cpu_s", "rss_peak_kib", "oopened", "oconns", "errors", "err_detail",
          "mean_ms", "max_ms", "proto", "note", "window_s"]


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


def _oconns(v):
    """'3,4,4,4' (ss samples) -> '4 (3–4, 4 samples)'; the median first."""
    xs = sorted(int(x) for x in v.split(",") if x.strip().lstrip("-").isdigit() and int(x) >= 0)
    if not xs:
        return "—"
    med = xs[len(xs) // 2]
    return "%d (%d–%d, %d samples)" % (med, xs[0], xs[-1], len(xs))


def _derive(r):
    d = {}
    req, dur, cpu = _num(r["requests"]), _num(r["duration_s"]), _num(r["cpu_s"])
    ok = r["status"] == "ok" and bool(req) and bool(dur) and cpu is not None
    d["ok"] = ok
    d["rate"] = req / dur if ok else None
    d["cpu"] = cpu / req * 1e5 if ok else None
    d["cpupct"] = cpu / dur * 100 if ok else None
    ocpu, oth = _num(r["origin_cpu_s"]), _num(r["other_cpu_s"])
    d["ocpupct"] = ocpu / dur * 100 if ok and ocpu is not None else None
    win = _num(r["window_s"]) or dur  # the window the machine's CPU was read over
    d["otherpct"] = max(0.0, oth / win * 100) if ok and oth is not None and win else None
    peak = _num(r["rss_peak_kib"])
    d["peak"] = peak / 1024 if ok and peak else None
    d["opened"] = _num(r["oopened"]) if ok else None
    d["oconns"] = _oconns(r["oconns"]) if ok else "—"
    d["mean"] = _num(r["mean_ms"]) if ok else None
    d["max"] = _num(r["max_ms"]) if ok else None
    if ok:
        n = int(r["errors"] or 0)
        d["errors"] = "0" if n == 0 else "%d (%s)" % (n, r["err_detail"])
    else:
        d["errors"] = r["status"].upper() + (": " + r["note"] if r["note"] else "")
    d["proto"] = r["proto"]
    return d


def _f(v, fmt):
    return "—" if v is None else fmt % v


COLS = [("proxy", "proxy", None), ("req/s", "rate", "%.0f"),
        ("CPU-s/100k req", "cpu", "%.2f"), ("proxy CPU %", "cpupct", "%.0f"),
        ("origin CPU %", "ocpupct", "%.0f"), ("other CPU %", "otherpct", "%.0f"),
        ("RSS MiB peak", "peak", "%.1f"),
        ("origin conns (ss: median, range)", "oconns", None),
        ("origin conns opened", "opened", "%.0f"),
        ("mean ms", "mean", "%.2f"), ("max ms", "max", "%.1f"),
        ("protocol", "proto", None), ("errors", "errors", None)]
TABLES = {
    "tls-h2": "h2 over TLS 1.3 to the proxy, HTTP/1.1 to the origin (h2load -m10)",
    "h2c-h2c": "h2c to the proxy, h2c to an h2c origin (h2load -m10)",
}
# Issue 12's goal for the TLS h2 row.
GOAL = ("tls-h2", "haproxy", 0.8)


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
    heads = [h for h, _, _ in COLS]
    right = {i for i, (_, _, fmt) in enumerate(COLS) if fmt}
    for sc, title in TABLES.items():
        sel = [r for r in rows if r["scenario"] == sc]
        if not sel:
            continue
        cells, by = [], {}
        for r in sel:
            d = _derive(r)
            by[r["proxy"]] = d
            cells.append([r["proxy"] if k == "proxy" else d[k] if fmt is None else _f(d[k], fmt)
                          for _, k, fmt in COLS])
        text += [title] + _plain(heads, cells, right) + [""]
        mdout += ["**" + title + "**", ""] + _md(heads, cells, right) + [""]
        w = by.get("weir", {})
        for other in ("nginx", "haproxy"):
            if other not in by:
                continue
            o = by[other]
            ratio_rows.append([sc, "weir/" + other, _ratio(w.get("cpu"), o.get("cpu")),
                               _ratio(w.get("rate"), o.get("rate"))])
        gsc, gother, glim = GOAL
        o = by.get(gother, {})
        if sc == gsc and w.get("cpu") is not None and o.get("cpu") is not None:
            r = w["cpu"] / o["cpu"]
            goal_lines.append("%s: weir/%s CPU %.2f× (goal ≤ %.2f×): %s" % (
                sc, gother, r, glim, "met" if r <= glim else "NOT met"))
    rheads = ["scenario", "ratio", "CPU per request", "req/s"]
    text += ["Ratios (CPU: lower is better for weir; req/s: higher is better)"]
    text += _plain(rheads, ratio_rows, set()) + [""] + goal_lines
    mdout += ["Ratios (CPU per request: lower is better for weir; req/s: higher is better):", ""]
    mdout += _md(rheads, ratio_rows, {2, 3}) + [""]
    mdout += ["- " + g for g in goal_lines]
    print("\n".join(text))
    tmp = md + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(mdout).rstrip() + "\n")
    os.replace(tmp, md)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "wait-h2":
        return cmd_wait_h2(*args)
    if cmd == "h2load":
        return cmd_h2load(*args)
    if cmd == "sample-conns":
        return cmd_sample_conns(*args)
    if cmd == "accepts":
        return cmd_accepts(*args)
    if cmd == "report":
        cmd_report(*args)
        return 0
    print("unknown subcommand %r" % cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
