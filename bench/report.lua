-- wrk script: print one machine-readable line at the end of a run (parsed by bench/run.sh).
-- wrk counts a response as a "status" error when its status is > 399.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
