-- wrk script: POST one row per request to the URL given to wrk; the JSON body is read from $BENCH_BODY_FILE.
-- The done() hook prints exact latency percentiles (microseconds) on lines wrk does not print itself.
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "r"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_us=%d\n", summary.requests, summary.duration))
  io.write(string.format(
    "BENCH errors connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
  io.write(string.format("BENCH latency_us p50=%d p95=%d p99=%d max=%d\n",
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
