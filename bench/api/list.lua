-- wrk script: GET one page (50 jobs) of /v1/jobs, starting at a random depth each time
-- (keyset pagination must cost the same on page 1 and page 2,000). A cursor names a job,
-- so the cursors are the ids of the seeded jobs (bench_api.py writes them to a file).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TRAINYARD_TOKEN")
local ids = {}
for line in io.lines(os.getenv("TRAINYARD_BENCH_JOB_IDS")) do
  ids[#ids + 1] = line
end

request = function()
  local cursor = ids[math.random(51, #ids)]
  return wrk.format("GET", "/v1/jobs?limit=50&cursor=" .. cursor)
end
