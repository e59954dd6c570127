#!/usr/bin/env python3
"""Helpers for bench/cache_hitpath.sh.

  cache_hitpath.py probe PORT PATH BODYFILE
        GET PATH on 127.0.0.1:PORT over one connection; print one line per response:
        "status=200 body=ok cache=<the cache header>" (weir's Cache-Status, nginx's
        X-Cache-Status, Varnish's X-Varnish and Age). Exit 1 when a response is not 200 with
        the file's bytes.
  cache_hitpath.py report TSV MD [META]
        print the table and the ratios weir/nginx and weir/Varnish; write them as Markdown.

TSV columns: proxy status requests duration_s cpu_s origin_cpu_s other_cpu_s rss_after_kib
rss_peak_kib errors bytes p50_us p99_us origin_fetches hit_check note
"""
import http.client
import os
import sys


def cmd_probe(port, path, bodyfile):
    with open(bodyfile, "rb") as f:
        want = f.read()
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    rc = 0
    for _ in range(2):
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        ok = r.status == 200 and body == want
        rc |= 0 if ok else 1
        cache = []
        for h in ("Cache-Status", "X-Cache-Status", "X-Varnish", "Age"):
            v = r.getheader(h)
            if v is not None:
                cache.append("%s: %s" % (h, v))
        print("status=%d body=%s cache=%s" % (r.status, "ok" if ok else "WRONG (%d bytes)" % len(body),
                                               "; ".join(cache) or "(none)"))
    c.close()
    return rc


FIELDS = ["proxy", "status", "requests", "duration_s", "cpu_s", "origin_cpu_s", "other_cpu_s",
          "rss_after_kib", "rss_peak_kib", "errors", "bytes", "p50_us", "p99_us",
          "origin_fetches", "hit_check", "note"]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def cmd_report(tsv, md, meta=None):
    rows = []
    with open(tsv) as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#"):
                vals = line.split("\t")
                vals += [""] * (len(FIELDS) - len(vals))
                rows.append(dict(zip(FIELDS, vals)))
    heads = ["proxy", "req/s", "CPU-s/100k hits", "proxy CPU %", "origin CPU %", "other CPU %",
             "RSS MiB peak", "RSS MiB after", "p50 ms", "p99 ms", "bytes/resp", "origin fetches",
             "hits?", "errors"]
    table, d = [], {}
    for r in rows:
        ok = r["status"] == "ok"
        req, dur, cpu = num(r["requests"]), num(r["duration_s"]), num(r["cpu_s"])
        x = {}
        if ok and req and dur:
            x["rps"] = req / dur
            x["cpu100k"] = cpu / req * 1e5 if r["proxy"] != "origin" else None
            x["cpupct"] = cpu / dur * 100 if r["proxy"] != "origin" else None
            x["ocpu"] = num(r["origin_cpu_s"]) / dur * 100
            x["other"] = max(0.0, num(r["other_cpu_s"]) / dur * 100)
            x["peak"] = num(r["rss_peak_kib"]) / 1024 if r["proxy"] != "origin" else None
            x["after"] = num(r["rss_after_kib"]) / 1024 if r["proxy"] != "origin" else None
            x["p50"] = num(r["p50_us"]) / 1000
            x["p99"] = num(r["p99_us"]) / 1000
            x["bpr"] = num(r["bytes"]) / req
        d[r["proxy"]] = x

        def f(k, fmt):
            return "—" if x.get(k) is None else fmt % x[k]
        errs = r["errors"] if ok else "%s: %s" % (r["status"].upper(), r["note"])
        table.append([r["proxy"], f("rps", "%.0f"), f("cpu100k", "%.2f"), f("cpupct", "%.0f"),
                      f("ocpu", "%.0f"), f("other", "%.0f"), f("peak", "%.1f"), f("after", "%.1f"),
                      f("p50", "%.2f"), f("p99", "%.2f"), f("bpr", "%.0f"),
                      r["origin_fetches"] or "—", r["hit_check"] or "—", errs])

    def ratio(a, b):
        return "n/a" if a is None or b is None or b == 0 else "%.2fx" % (a / b)
    w = d.get("weir", {})
    ratios = []
    for other in ("nginx", "varnish"):
        o = d.get(other, {})
        ratios.append(["weir/" + other, ratio(w.get("cpu100k"), o.get("cpu100k")),
                       ratio(w.get("rps"), o.get("rps")), ratio(w.get("peak"), o.get("peak"))])
    rheads = ["ratio", "CPU per hit", "req/s", "peak RSS"]

    def text(hs, tb):
        wd = [max(len(h), *(len(t[i]) for t in tb)) if tb else len(h) for i, h in enumerate(hs)]
        out = ["  ".join(h.ljust(wd[i]) for i, h in enumerate(hs)), "  ".join("-" * n for n in wd)]
        return out + ["  ".join(c.ljust(wd[i]) for i, c in enumerate(t)) for t in tb]

    def mdt(hs, tb):
        return (["| " + " | ".join(hs) + " |", "|" + "---|" * len(hs)] +
                ["| " + " | ".join(c.replace("|", "\\|") for c in t) + " |" for t in tb])
    print("\n".join(text(heads, table)))
    print()
    print("Ratios (CPU per hit and RSS: lower is better for weir; req/s: higher)")
    print("\n".join(text(rheads, ratios)))
    out = []
    if meta and os.path.exists(meta):
        with open(meta) as fm:
            out.append(fm.read().rstrip() + "\n")
    out += mdt(heads, table) + ["", "Ratios (CPU per hit and RSS: lower is better for weir; req/s: higher):", ""]
    out += mdt(rheads, ratios)
    with open(md, "w") as fo:
        fo.write("\n".join(out) + "\n")
    return 0


def main(argv):
    if len(argv) >= 5 and argv[1] == "probe":
        return cmd_probe(*argv[2:5])
    if len(argv) >= 4 and argv[1] == "report":
        return cmd_report(*argv[2:5])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
