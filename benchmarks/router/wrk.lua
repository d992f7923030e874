-- wrk script: POST the body in $WRK_BODY; with $WRK_DELAY_MS, each connection waits that long
-- between requests (a moderate, roughly fixed rate); prints one machine-readable summary line.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
if delay_ms then
   function delay()
      return delay_ms
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
      '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
