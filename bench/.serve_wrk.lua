
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/programs/qa", nil, '{"question":"wrk question ' .. n .. '"}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JSON {\"requests\": %d, \"us\": %d, \"non200\": %d, \"socket_errors\": %d, "
    .. "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"mean_ms\": %.3f}\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.mean / 1000))
end
