-- wrk script for bench/http_load.py.
--   wrk ... -s bench/wrk_report.lua URL -- header TOKEN     every request carries TOKEN
--   wrk ... -s bench/wrk_report.lua URL -- cycle FILE       the next token of FILE (one per line) each time
-- At the end one line "RESULT {json}" with requests, duration, p50/p99 latency (µs) and errors.

local tokens = {}
local next_token = 0

function init(args)
  if args[1] == "header" then
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  elseif args[1] == "cycle" then
    for line in io.lines(args[2]) do
      if #line > 0 then
        tokens[#tokens + 1] = "Bearer " .. line
      end
    end
    request = function()
      next_token = next_token % #tokens + 1
      return wrk.format("GET", nil, { ["Authorization"] = tokens[next_token] })
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
