-- POST /v1/email/enrich with an email never asked before on every request, so that
-- every call misses the cache and goes to the (sandbox) vendors.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
local counter = 0
thread_id = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
function request()
  counter = counter + 1
  local body = string.format('{"email":"bench.%s.%d.%d@acme.com"}', os.getenv("BENCH_RUN"), thread_id, counter)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
  }, body)
end
