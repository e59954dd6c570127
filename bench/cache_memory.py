#!/usr/bin/env python3
"""Helpers for bench/cache_memory.sh: the load client with its memory sampler, and the report.

  cache_memory.py load --port P --pid PID --prefix /obj/64k/c64m- --keys K --size BYTES
                       --body-file F --seconds S [--conns 8] [--zipf 1.0] [--seed 1]
                       [--max-requests N] [--tail 3] --out RESULT.json --samples SAMPLES.tsv
  cache_memory.py report RESULT.json... --md OUT.md [--slack-mib 32]

load: one asyncio process, CONNS keep-alive HTTP/1.1 connections to 127.0.0.1:P, one request
at a time on each. First a warm-up (one GET of PREFIX"warm" per connection), then 1 s idle and
the "before" memory sample. Then, within S seconds of the load's start:
  fill   every key PREFIX0 .. PREFIX(K-1) once, in order (the connections take the next key in
         turn), so the cache sees K distinct objects and must evict all but what fits;
  zipf   until S seconds are up (or N requests in all): keys drawn from Zipf(ZIPF) over the K
         keys (seeded), ranks spread over the key space by a fixed permutation, so the hot
         keys were fetched all through the fill and most of them were evicted by its end:
         hits, misses and evictions all happen.
Every response is checked (200, the body is the file's bytes; chunked or Content-Length) and
its Cache-Status counted (the value with ttl=N dropped). Every second (and at the phase
changes) the proxy PID's memory is read: VmRSS, VmHWM, RssAnon, RssFile from /proc/PID/status
and Pss, Pss_Anon from /proc/PID/smaps_rollup. After the load the connections are closed and
sampling goes on for TAIL seconds. Bounded: every request has a 10 s timeout, the load stops
scheduling at S seconds or N requests, and the process gives up at S + 30 s.

report: one row per result (a capacity), the overhead = peak RSS - capacity - RSS before, the
marginal RSS per MiB of capacity between the smallest and largest capacity (about 1.0 with a
fixed overhead; more when the overhead grows with the capacity), the Cache-Status counts and
what the origin saw (from its access log, one request URI per line: keys fetched, and fetched
more than once = evicted and fetched again). Written to stdout and as Markdown to OUT.md.
"""
import argparse
import asyncio
import bisect
import json
import math
import os
import random
import re
import sys
import time

MIB = 1024 * 1024


# ---------------------------------------------------------------- memory sampling

def read_mem(pid):
    """KiB figures of process PID: VmRSS, VmHWM, RssAnon, RssFile, Pss, Pss_Anon (None if gone)."""
    m = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmData", "Threads"):
                    m[k] = int(v.split()[0])
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Pss", "Pss_Anon"):
                    m[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return m


# ---------------------------------------------------------------- the client

class Load:
    def __init__(self, a):
        self.a = a
        with open(a.body_file, "rb") as f:
            self.body = f.read()
        assert len(self.body) == a.size, "body file is %d bytes, --size %d" % (len(self.body), a.size)
        self.phase = "warm"
        self.done = 0           # responses checked, all phases after warm-up
        self.counts = {}        # phase -> {cache-status: n}
        self.errors = {}        # kind -> n
        self.samples = []
        self.next_key = 0
        self.fill_done_at = None
        self.zipf_req = 0
        self.rng = random.Random(a.seed)
        # Zipf(s) CDF over K ranks; rank r -> key (r * mult + 7) mod K, mult coprime with K.
        w = [1.0 / (r + 1) ** a.zipf for r in range(a.keys)]
        tot = sum(w)
        acc, self.cdf = 0.0, []
        for x in w:
            acc += x / tot
            self.cdf.append(acc)
        mult = 7919
        while math.gcd(mult, a.keys) != 1:
            mult += 2
        self.mult = mult
        self.seen_keys = set()  # keys answered so far (fill and zipf)
        self.refetched = 0      # zipf misses for keys answered before: evicted and fetched again

    def err(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def sample(self, t0, label=None):
        m = read_mem(self.a.pid)
        if m is None:
            return None
        hits = sum(v for k, v in self.counts.get(self.phase, {}).items() if k.startswith("hit"))
        s = {"t": round(time.monotonic() - t0, 3), "phase": label or self.phase, "done": self.done,
             "phase_hits": hits}
        s.update(m)
        self.samples.append(s)
        return s

    def pick(self):
        """The next key to ask for, or None when the load is over."""
        a = self.a
        now = time.monotonic()
        if now >= self.deadline or self.done + self.inflight >= a.max_requests:
            return None
        if self.phase == "fill":
            if self.next_key < a.keys:
                k = self.next_key
                self.next_key += 1
                return k
            return "wait"       # the last fill requests are in flight
        r = bisect.bisect_left(self.cdf, self.rng.random())
        r = min(r, a.keys - 1)
        return (r * self.mult + 7) % a.keys

    async def request(self, reader, writer, path):
        writer.write(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: cache_memory\r\n\r\n"
                      % (path, self.a.port)).encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {}
        for ln in lines[1:]:
            if ln:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            body = await reader.readexactly(int(hdrs["content-length"]))
        elif "chunked" in hdrs.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                parts.append(await reader.readexactly(size + 2))
            body = b"".join(p[:-2] for p in parts)
        else:
            raise ValueError("response without length")
        close = "close" in hdrs.get("connection", "").lower()
        return status, hdrs, body, close

    async def conn_loop(self, idx):
        a = self.a
        reader = writer = None
        try:
            while True:
                if self.phase == "warm":
                    key = None
                else:
                    key = self.pick()
                    if key is None:
                        return
                    if key == "wait":
                        await asyncio.sleep(0.005)
                        continue
                if writer is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", a.port, limit=4 * MIB), 10)
                path = a.prefix + ("warm" if key is None else str(key))
                phase = self.phase
                self.inflight += 1
                try:
                    st, hdrs, body, close = await asyncio.wait_for(
                        self.request(reader, writer, path), 10)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        asyncio.TimeoutError, ValueError, IndexError) as e:
                    self.err(type(e).__name__)
                    writer.close()
                    writer = None
                    if self.phase == "warm":
                        return
                    continue
                finally:
                    self.inflight -= 1
                cs = hdrs.get("cache-status", "(none)")
                cs = re.sub(r"^weir;\s*", "", cs)
                cs = re.sub(r";\s*ttl=\d+", "", cs)
                c = self.counts.setdefault(phase, {})
                c[cs] = c.get(cs, 0) + 1
                if st != 200:
                    self.err("status %d" % st)
                elif body != self.body:
                    self.err("wrong body (%d bytes)" % len(body))
                if phase != "warm":
                    self.done += 1
                    if phase == "zipf" and not cs.startswith("hit") and key in self.seen_keys:
                        self.refetched += 1
                    self.seen_keys.add(key)
                    if phase == "zipf":
                        self.zipf_req += 1
                if close:
                    writer.close()
                    writer = None
                if self.phase == "warm":
                    return
        finally:
            if writer is not None:
                writer.close()

    async def sampler(self, t0, stop):
        while not stop.is_set():
            self.sample(t0)
            try:
                await asyncio.wait_for(stop.wait(), self.a.interval)
            except asyncio.TimeoutError:
                pass

    async def run(self):
        a = self.a
        self.inflight = 0
        self.deadline = time.monotonic() + 3600
        t_start = time.monotonic()
        # Warm-up: one request per connection for one key, so every connection's buffers exist.
        await asyncio.gather(*(self.conn_loop(i) for i in range(a.conns)))
        await asyncio.sleep(1.0)
        before = self.sample(t_start, "before")
        # The load.
        t0 = time.monotonic()
        self.deadline = t0 + a.seconds
        self.phase = "fill"
        stop = asyncio.Event()
        samp = asyncio.ensure_future(self.sampler(t0, stop))
        tasks = [asyncio.ensure_future(self.conn_loop(i)) for i in range(a.conns)]

        async def watch_fill():
            while self.phase == "fill":
                if self.next_key >= a.keys and self.inflight == 0:
                    self.fill_done_at = time.monotonic() - t0
                    self.sample(t0, "fill-end")
                    self.phase = "zipf"
                    return
                if all(t.done() for t in tasks):
                    return
                await asyncio.sleep(0.01)
        await asyncio.gather(watch_fill(), *tasks)
        load_s = time.monotonic() - t0
        end = self.sample(t0, "end")
        stop.set()
        await samp
        # Connections are closed by now; sample a few more seconds.
        t_tail = time.monotonic()
        while time.monotonic() - t_tail < a.tail:
            await asyncio.sleep(a.interval)
            self.sample(t0, "tail")
        return {"before": before, "end": end, "load_s": round(load_s, 3),
                "fill_s": round(self.fill_done_at, 3) if self.fill_done_at is not None else None,
                "fill_keys": self.next_key}


def cmd_load(argv):
    ap = argparse.ArgumentParser(prog="cache_memory.py load")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--body-file", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-requests", type=int, default=5_000_000)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--tail", type=float, default=3.0)
    ap.add_argument("--capacity", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", required=True)
    a = ap.parse_args(argv)
    ld = Load(a)
    res = asyncio.run(asyncio.wait_for(ld.run(), a.seconds + 30 + a.tail))
    res.update({"capacity": a.capacity, "keys": a.keys, "size": a.size, "conns": a.conns,
                "zipf": a.zipf, "requests": ld.done, "zipf_requests": ld.zipf_req,
                "counts": ld.counts, "errors": ld.errors, "refetched": ld.refetched,
                "distinct_keys_answered": len(ld.seen_keys), "prefix": a.prefix,
                "samples": ld.samples})
    with open(a.samples, "w") as f:
        cols = ["t", "phase", "done", "phase_hits", "VmRSS", "VmHWM", "RssAnon", "RssFile",
                "Pss", "Pss_Anon", "VmData", "Threads"]
        f.write("\t".join(cols) + "\n")
        for s in ld.samples:
            f.write("\t".join(str(s.get(c, "")) for c in cols) + "\n")
    with open(a.out, "w") as f:
        json.dump(res, f)
    tot = sum(sum(c.values()) for p, c in ld.counts.items() if p != "warm")
    print("load: %d requests in %.1f s (fill of %d keys in %s s), errors %s, peak VmRSS %d KiB" % (
        tot, res["load_s"], a.keys, res["fill_s"], ld.errors or 0,
        max(s.get("VmRSS", 0) for s in ld.samples)))
    return 0


# ---------------------------------------------------------------- report

def parse_size(s):
    m = re.fullmatch(r"(\d+)([kmg]?)", s.strip().lower())
    if not m:
        raise ValueError("bad size %r" % s)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}[m.group(2)]


def origin_counts(log, prefix):
    per = {}
    try:
        with open(log) as f:
            for line in f:
                u = line.strip()
                if u.startswith(prefix) and u[len(prefix):].isdigit():
                    per[u] = per.get(u, 0) + 1
    except OSError:
        return None
    return {"requests": sum(per.values()), "keys": len(per),
            "refetched_keys": sum(1 for v in per.values() if v > 1),
            "max_per_key": max(per.values()) if per else 0}


def cmd_report(argv):
    ap = argparse.ArgumentParser(prog="cache_memory.py report")
    ap.add_argument("results", nargs="+")
    ap.add_argument("--md", required=True)
    ap.add_argument("--origin-log", required=True)
    ap.add_argument("--slack-mib", type=float, default=32)
    ap.add_argument("--meta", default="")
    a = ap.parse_args(argv)
    rows, notes = [], []
    for path in a.results:
        with open(path) as f:
            r = json.load(f)
        cap = parse_size(r["capacity"])
        ss = [s for s in r["samples"] if "VmRSS" in s]
        load = [s for s in ss if s["phase"] in ("fill", "fill-end", "zipf", "end")]
        before = r["before"]["VmRSS"]
        peak_sample = max(load, key=lambda s: s["VmRSS"])
        hwm = max(s.get("VmHWM", 0) for s in ss)
        peak = max(peak_sample["VmRSS"], hwm)
        pss_peak = max(s.get("Pss", 0) for s in load)
        end = r["end"]["VmRSS"]
        tail = [s for s in ss if s["phase"] == "tail"]
        settled = tail[-1]["VmRSS"] if tail else None
        # Growth over the last quarter of the load: stopped growing, or still going?
        t_end = r["load_s"]
        last_q = [s for s in load if s["t"] >= 0.75 * t_end]
        first_3q = [s for s in load if s["t"] < 0.75 * t_end]
        growth_last_q = (max(s["VmRSS"] for s in last_q) - max(s["VmRSS"] for s in first_3q)
                         if last_q and first_3q else None)
        counts = {}
        for ph in ("fill", "zipf"):
            for k, v in r["counts"].get(ph, {}).items():
                counts.setdefault(ph, {})[k] = v
        zc = counts.get("zipf", {})
        zt = sum(zc.values())
        zhits = sum(v for k, v in zc.items() if k.startswith("hit"))
        oc = origin_counts(a.origin_log, r["prefix"])
        over = peak - cap / 1024 - before
        rows.append({"cap": cap, "capacity": r["capacity"], "keys": r["keys"], "size": r["size"],
                     "requests": r["requests"], "load_s": r["load_s"], "fill_s": r["fill_s"],
                     "fill_keys": r["fill_keys"], "before": before, "peak": peak,
                     "peak_t": peak_sample["t"], "pss_peak": pss_peak, "end": end,
                     "settled": settled, "over": over, "growth_last_q": growth_last_q,
                     "zipf_req": zt, "zipf_hit_pct": 100.0 * zhits / zt if zt else None,
                     "counts": counts, "origin": oc, "errors": r["errors"],
                     "refetched": r["refetched"], "end_status": r["end"],
                     "rss_anon_peak": max(s.get("RssAnon", 0) for s in load)})

    def mib(k):
        return "—" if k is None else "%.1f" % (k / 1024)

    heads = ["capacity", "keys (x size)", "requests", "fill s", "zipf hit %",
             "RSS before MiB", "RSS peak MiB", "at s", "PSS peak MiB", "RSS end MiB",
             "RSS +%gs MiB" % 3, "overhead MiB", "overhead % of C", "growth last 1/4 MiB",
             "origin reqs", "origin keys", "keys refetched", "errors"]
    table = []
    for x in rows:
        oc = x["origin"] or {}
        table.append([
            x["capacity"], "%d x %d KiB" % (x["keys"], x["size"] // 1024), str(x["requests"]),
            "%s" % x["fill_s"] if x["fill_s"] is not None else "unfinished (%d)" % x["fill_keys"],
            "—" if x["zipf_hit_pct"] is None else "%.1f" % x["zipf_hit_pct"],
            mib(x["before"]), mib(x["peak"]), "%.0f" % x["peak_t"], mib(x["pss_peak"]),
            mib(x["end"]), mib(x["settled"]), mib(x["over"]),
            "%.1f" % (100.0 * x["over"] * 1024 / x["cap"]),
            mib(x["growth_last_q"]),
            str(oc.get("requests", "?")), str(oc.get("keys", "?")),
            str(oc.get("refetched_keys", "?")),
            str(sum(x["errors"].values())) if x["errors"] else "0"])
    w = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w[i]) for i, h in enumerate(heads)),
             "  ".join("-" * n for n in w)]
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(t)) for t in table]
    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    md += ["| " + " | ".join(t) + " |" for t in table]

    extra = []
    for x in rows:
        parts = []
        for ph in ("fill", "zipf"):
            c = x["counts"].get(ph, {})
            parts.append("%s: %s" % (ph, ", ".join("%s x%d" % (k, v) for k, v in
                                                    sorted(c.items(), key=lambda kv: -kv[1]))))
        extra.append("%s Cache-Status: %s; zipf misses for keys answered before (evicted, fetched "
                     "again): %d" % (x["capacity"], "; ".join(parts), x["refetched"]))
        if x["errors"]:
            extra.append("%s client errors: %s" % (x["capacity"], x["errors"]))
    if len(rows) >= 2:
        lo, hi = min(rows, key=lambda r: r["cap"]), max(rows, key=lambda r: r["cap"])
        if hi["cap"] > lo["cap"]:
            slope = ((hi["peak"] - hi["before"]) - (lo["peak"] - lo["before"])) * 1024 / (hi["cap"] - lo["cap"])
            extra.append("marginal RSS per MiB of capacity, %s -> %s: %.3f MiB (peak - before; "
                         "1.0 = the overhead is fixed, not proportional); overhead %s MiB at %s, "
                         "%s MiB at %s" % (lo["capacity"], hi["capacity"], slope, mib(lo["over"]),
                                           lo["capacity"], mib(hi["over"]), hi["capacity"]))
    for x in rows:
        flag = []
        if x["over"] > a.slack_mib * 1024:
            flag.append("RSS peak %s MiB is more than capacity + %g MiB over the RSS before "
                        "(overhead %s MiB)" % (mib(x["peak"]), a.slack_mib, mib(x["over"])))
        if x["growth_last_q"] is not None and x["growth_last_q"] > 2048:
            flag.append("RSS still grew by %s MiB in the last quarter of the load" %
                        mib(x["growth_last_q"]))
        oc = x["origin"] or {}
        if not oc.get("refetched_keys"):
            flag.append("the origin saw no key twice: no evicted key was fetched again")
        if not x["zipf_hit_pct"]:
            flag.append("no hits in the zipf phase")
        if x["fill_s"] is None:
            flag.append("the fill did not finish within the run (%d of %d keys)" %
                        (x["fill_keys"], x["keys"]))
        st = x["end_status"]
        if flag:
            notes.append("%s: %s. weir at the end: VmRSS %s, VmHWM %s, RssAnon %s, RssFile %s KiB, "
                         "Pss %s, Pss_Anon %s KiB, VmData %s KiB, %s threads" % (
                             x["capacity"], "; ".join(flag), st.get("VmRSS"), st.get("VmHWM"),
                             st.get("RssAnon"), st.get("RssFile"), st.get("Pss"),
                             st.get("Pss_Anon"), st.get("VmData"), st.get("Threads")))
    out = lines + [""] + extra
    if notes:
        out += [""] + ["WARNING: " + n for n in notes]
    else:
        out += ["", "ok: in every run, peak RSS <= capacity + %g MiB over the RSS before, hits and "
                    "refetches of evicted keys both happened" % a.slack_mib]
    print("\n".join(out))
    with open(a.md, "w") as f:
        if a.meta and os.path.exists(a.meta):
            with open(a.meta) as m:
                f.write(m.read().rstrip() + "\n\n")
        f.write("\n".join(md + [""] + ["- " + e for e in extra] +
                          ([""] + ["**WARNING**: " + n for n in notes] if notes else [])) + "\n")
    return 0


def main(argv):
    if len(argv) < 2 or argv[1] not in ("load", "report"):
        print(__doc__, file=sys.stderr)
        return 2
    return cmd_load(argv[2:]) if argv[1] == "load" else cmd_report(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
