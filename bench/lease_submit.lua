-- wrk script: each thread drives one connection through the real node protocol,
-- lease N download tasks -> submit them all done -> lease again, and counts the
-- tasks the server accepted. Run with -t C -c C (one connection per thread):
--   wrk -t16 -c16 -d10s -s bench/lease_submit.lua http://127.0.0.1:PORT -- KEY SITE BATCH

local SHA = string.rep("ab", 32)
local lease_request, next_request
completed, leases, empty, errors, bad_status = 0, 0, 0, 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local key, site, batch = args[1], args[2], tonumber(args[3])
  wrk.headers["Authorization"] = "Bearer " .. key
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Fetchfleet-Client-Version"] = "0.1.0"
  lease_request = wrk.format("POST", "/leases", nil,
    string.format('{"kind":"download","site":"%s","n":%d}', site, batch))
  next_request = lease_request
end

function request()
  return next_request
end

local function results_for(body)
  local parts = {}
  for id in body:gmatch('"id":%s*(%d+)') do
    parts[#parts + 1] = '{"task_id":' .. id .. ',"status":"done","files":[{"path":"b/' .. id ..
      '.png","size":1,"sha256":"' .. SHA .. '","mime":"image/png"}]}'
  end
  return '{"results":[' .. table.concat(parts, ",") .. ']}'
end

function response(status, headers, body)
  if status == 201 then
    local lease_id = body:match('"lease_id":%s*"([^"]+)"')
    leases = leases + 1
    next_request = wrk.format("POST", "/leases/" .. lease_id .. "/results", nil, results_for(body))
    return
  end
  if status == 200 and body:find('"accepted"', 1, true) then
    local accepted = body:match('"accepted":%s*%[([^%]]*)%]')
    if accepted and #accepted > 0 then
      local _, commas = accepted:gsub(",", "")
      completed = completed + commas + 1
    end
  elseif status == 200 then
    empty = empty + 1
  else
    errors = errors + 1
    bad_status = status
  end
  next_request = lease_request
end

function done(summary, latency, requests)
  local total = {completed = 0, leases = 0, empty = 0, errors = 0, bad_status = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(total) do
      local value = thread:get(name)
      if name == "bad_status" then
        if value ~= 0 then total.bad_status = value end
      else
        total[name] = total[name] + value
      end
    end
  end
  io.write(string.format(
    'WRK_RESULT {"completed": %d, "leases": %d, "empty": %d, "errors": %d, "bad_status": %d, ' ..
    '"requests": %d, "duration_us": %d, "socket_errors": %d, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    total.completed, total.leases, total.empty, total.errors, total.bad_status, summary.requests,
    summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
