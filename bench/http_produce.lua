-- wrk script: POST 100 JSON records of 100-byte values per request to /topics/<topic>/records.
-- wrk -t2 -c16 -d10s -s bench/http_produce.lua http://127.0.0.1:8080/topics/bench-http/records
local value = string.rep("x", 100)
local recs = {}
for i = 1, 100 do
  recs[i] = '{"value":"' .. value .. '"}'
end
wrk.method = "POST"
wrk.body = '{"records":[' .. table.concat(recs, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  io.write(string.format("requests/s %.0f  records/s %.0f  p50 %.2f ms  p99 %.2f ms  non-2xx %d\n",
    summary.requests / (summary.duration / 1e6), 100 * summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status))
end
