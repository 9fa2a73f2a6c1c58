-- wrk script: GET one page (50 jobs) of /v1/jobs, starting at a random depth each time
-- (keyset pagination must cost the same on page 1 and page 2,000).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TRAINYARD_TOKEN")
local jobs = tonumber(os.getenv("TRAINYARD_BENCH_JOBS") or "100000")

request = function()
  local cursor = math.random(51, jobs + 1)
  return wrk.format("GET", "/v1/jobs?limit=50&cursor=" .. cursor)
end
