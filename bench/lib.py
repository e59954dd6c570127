#!/usr/bin/env python3
"""Helpers for bench/run.sh: free ports, readiness probe, /proc accounting, report.

Subcommands (all output on stdout, errors on stderr, exit 0 on success):
  ports N                    print N distinct free loopback TCP ports, one per line
  wait-http URL FILE SECS [PID]
                             poll URL until it answers 200 with FILE's bytes
  tree PID                   PID and all its live descendants, space-separated
  cpu PID                    utime+stime in seconds of PID and its descendants
  mem PID                    "<VmRSS KiB> <VmHWM KiB>" summed over PID and descendants
  sysbusy                    busy seconds of all CPUs since boot (no steal)
  busy SECS                  percent of all CPU time that was busy over SECS seconds
  report TSV MD [META]       print the results table, write it as Markdown to MD
"""
import http.client
import os
import socket
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- ports / probe

def cmd_ports(n):
    socks = []
    try:
        for _ in range(int(n)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        for s in socks:
            print(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()


def cmd_wait_http(url, path, secs, pid=None):
    """Wait until URL answers 200 with exactly the bytes of file PATH (or SECS elapse,
    or process PID, when given, is gone)."""
    with open(path, "rb") as f:
        want = f.read()
    assert url.startswith("http://")
    hostport, _, path = url[len("http://"):].partition("/")
    host, _, port = hostport.partition(":")
    deadline = time.monotonic() + float(secs)
    last = "no attempt"
    while time.monotonic() < deadline:
        if pid is not None and not os.path.exists("/proc/%d" % int(pid)):
            print("process %s exited before serving %s" % (pid, url), file=sys.stderr)
            return 1
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=2)
            c.request("GET", "/" + path)
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status == 200 and body == want:
                return 0
            last = "status %d, %d body bytes%s (want 200 and the %d bytes of %s)" % (
                r.status, len(body), ", content differs" if len(body) == len(want) else "",
                len(want), os.path.basename(path))
        except (OSError, http.client.HTTPException) as e:
            last = "%s: %s" % (type(e).__name__, e)
        time.sleep(0.1)
    print("not ready after %ss: %s" % (secs, last), file=sys.stderr)
    return 1


# ---------------------------------------------------------------- /proc accounting

def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        # comm (field 2) may contain spaces and parentheses: split after the last ')'.
        rest = stat[stat.rindex(")") + 2:].split()
        ppid = int(rest[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(pid):
    pid = int(pid)
    if not os.path.exists("/proc/%d" % pid):
        return []
    kids = _children_map()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime/stime are fields 14/15 -> rest[11], rest[12].
    return int(rest[11]) + int(rest[12])


def cmd_cpu(pid):
    total = 0
    for p in tree(pid):
        try:
            total += cpu_ticks(p)
        except OSError:
            pass
    print("%.2f" % (total / CLK_TCK))


def cmd_mem(pid):
    rss = hwm = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    print(rss, hwm)


def _cpu_totals():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)          # idle + iowait
    return sum(v[:8]), idle                               # guest time is inside user


def cmd_sysbusy():
    """Busy seconds (user, nice, system, irq, softirq; not steal) of all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    print("%.2f" % ((v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK))


def cmd_busy(secs):
    """Percent of all CPUs' time spent busy over SECS seconds (other load on the box)."""
    t0, i0 = _cpu_totals()
    time.sleep(float(secs))
    t1, i1 = _cpu_totals()
    dt = t1 - t0
    print("%.0f" % (100.0 * (dt - (i1 - i0)) / dt if dt > 0 else 0))


# ---------------------------------------------------------------- report

FIELDS = ["scenario", "proxy", "status", "requests", "duration_s", "cpu_s", "origin_cpu_s", "other_cpu_s",
          "rss_after_kib", "rss_peak_kib", "err_connect", "err_read", "err_write",
          "err_timeout", "err_status", "bytes", "p50_us", "p99_us", "note"]


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
    ok = r["status"] == "ok" and req and dur
    d["rps"] = req / dur if ok else None
    d["cpu100k"] = cpu / req * 1e5 if ok and cpu is not None and r["proxy"] != "origin" else None
    d["cpupct"] = cpu / dur * 100 if ok and cpu is not None and r["proxy"] != "origin" else None
    ocpu = _num(r["origin_cpu_s"])
    d["ocpupct"] = ocpu / dur * 100 if ok and ocpu is not None else None
    oth = _num(r["other_cpu_s"])
    d["otherpct"] = max(0.0, oth / dur * 100) if ok and oth is not None else None
    peak, after = _num(r["rss_peak_kib"]), _num(r["rss_after_kib"])
    d["peak"] = peak / 1024 if ok and peak else None
    d["after"] = after / 1024 if ok and after else None
    if ok:
        errs = {k: int(r["err_" + k]) for k in ("connect", "read", "write", "timeout", "status")}
        tot = sum(errs.values())
        d["errors"] = str(tot) if tot == 0 else "%d (%s)" % (
            tot, ", ".join("%s %d" % (k if k != "status" else "non-2xx", v)
                           for k, v in errs.items() if v))
        d["bpr"] = _num(r["bytes"]) / req
        d["p50"] = _num(r["p50_us"]) / 1000
        d["p99"] = _num(r["p99_us"]) / 1000
    else:
        d["errors"] = r["status"].upper() + (": " + r["note"] if r["note"] else "")
        d["bpr"] = d["p50"] = d["p99"] = None
    return d


def _f(v, fmt):
    return "—" if v is None else fmt % v


COLS = [("scenario", "scenario"), ("proxy", "proxy"), ("req/s", "rps"),
        ("CPU-s/100k req", "cpu100k"), ("proxy CPU %", "cpupct"), ("origin CPU %", "ocpupct"),
        ("other CPU %", "otherpct"),
        ("RSS MiB peak", "peak"), ("RSS MiB after", "after"),
        ("p50 ms", "p50"), ("p99 ms", "p99"), ("errors", "errors")]
FMT = {"rps": "%.0f", "cpu100k": "%.2f", "cpupct": "%.0f", "ocpupct": "%.0f", "otherpct": "%.0f", "peak": "%.1f",
       "after": "%.1f", "p50": "%.2f", "p99": "%.2f"}


def _ratio(a, b, fmt="%.2f×"):
    if a is None or b is None or b == 0:
        return "n/a"
    return fmt % (a / b)


def cmd_report(tsv, md, meta=None):
    rows = _load(tsv)
    table = []
    for r in rows:
        d = _derive(r)
        cells = []
        for _, key in COLS:
            if key in ("scenario", "proxy"):
                cells.append(r[key])
            elif key == "errors":
                cells.append(d["errors"])
            else:
                cells.append(_f(d[key], FMT[key]))
        table.append((r, d, cells))

    heads = [h for h, _ in COLS]
    widths = [max(len(h), *(len(c[2][i]) for c in table)) if table else len(h)
              for i, h in enumerate(heads)]
    right = {i for i, (_, k) in enumerate(COLS) if k in FMT}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(heads))
    print("  ".join("-" * w for w in widths))
    for _, _, cells in table:
        print(line(cells))

    # Ratios per scenario: weir vs nginx, weir vs HAProxy.
    by = {}
    for r, d, _ in table:
        by.setdefault(r["scenario"], {})[r["proxy"]] = d
    ratio_rows = []
    for sc, ps in by.items():
        w = ps.get("weir", {})
        for other in ("nginx", "haproxy"):
            o = ps.get(other, {})
            ratio_rows.append([sc, "weir/" + other,
                               _ratio(w.get("rps"), o.get("rps")),
                               _ratio(w.get("cpu100k"), o.get("cpu100k")),
                               _ratio(w.get("peak"), o.get("peak"))])
    rheads = ["scenario", "ratio", "req/s", "CPU per req", "peak RSS"]
    rw = [max(len(h), *(len(x[i]) for x in ratio_rows)) if ratio_rows else len(h)
          for i, h in enumerate(rheads)]
    print()
    print("Ratios (req/s: higher is better for weir; CPU per request and RSS: lower is better)")
    print("  ".join(h.ljust(w) for h, w in zip(rheads, rw)))
    print("  ".join("-" * w for w in rw))
    for x in ratio_rows:
        print("  ".join(c.ljust(w) for c, w in zip(x, rw)))

    sanity = [(r, d) for r, d, _ in table if d["bpr"] is not None]
    if sanity:
        print()
        print("Sanity: bytes read per response (headers + body): " + ", ".join(
            "%s/%s %.0f" % (r["scenario"], r["proxy"], d["bpr"]) for r, d in sanity))

    out = []
    if meta and os.path.exists(meta):
        with open(meta) as f:
            out.append(f.read().rstrip() + "\n")
    out.append("| " + " | ".join(heads) + " |")
    out.append("|" + "|".join("---:" if i in right else "---" for i in range(len(heads))) + "|")
    for _, _, cells in table:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out.append("")
    out.append("Ratios (req/s: higher is better for weir; CPU per request and peak RSS: lower is better):")
    out.append("")
    out.append("| " + " | ".join(rheads) + " |")
    out.append("|---|---|---:|---:|---:|")
    for x in ratio_rows:
        out.append("| " + " | ".join(x) + " |")
    if sanity:
        out.append("")
        out.append("Bytes read per response (headers + body), from wrk: " + ", ".join(
            "%s/%s %.0f" % (r["scenario"], r["proxy"], d["bpr"]) for r, d in sanity) + ".")
    tmp = md + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, md)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        cmd_ports(*args)
    elif cmd == "wait-http":
        return cmd_wait_http(*args)
    elif cmd == "tree":
        print(" ".join(map(str, tree(args[0]))))
    elif cmd == "cpu":
        cmd_cpu(*args)
    elif cmd == "mem":
        cmd_mem(*args)
    elif cmd == "sysbusy":
        cmd_sysbusy()
    elif cmd == "busy":
        cmd_busy(*args)
    elif cmd == "report":
        cmd_report(*args)
    else:
        print("unknown subcommand %r" % cmd, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
