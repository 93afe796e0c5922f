-- paycore bench: POST /v1/payments card sales, each with its own Idempotency-Key.
--
--   wrk -t1 -c64 -d20s --timeout 30s -s src/paycore/benchmark/sale.lua http://127.0.0.1:8080 -- API_KEY TOKEN [PREFIX]
--
-- `paycore bench --tool wrk` runs it for you (with a fresh stack). At the end it prints one JSON
-- line ({"event":"wrk_done",...}) with wrk's latency percentiles and the responses by status.

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

local counter = 0
local prefix = "wrk"
statuses = {}

function init(args)
  local api_key = args[1] or ""
  local token = args[2] or ""
  prefix = (args[3] or "wrk") .. "-" .. tostring(thread_id) .. "-" .. tostring(os.time())
  wrk.method = "POST"
  wrk.path = "/v1/payments"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. api_key
  wrk.body = '{"amount":1050,"currency":"USD","token":"' .. token .. '"}'
end

function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. "-" .. counter
  return wrk.format()
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for code, n in pairs(counts) do
      merged[code] = (merged[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(merged) do
    table.insert(parts, string.format('"%s":%d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    '{"event":"wrk_done","requests":%d,"duration_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},' ..
    '"statuses":{%s}}\n',
    summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    table.concat(parts, ",")))
end
