-- POST /v1/email/enrich with an email never asked before on every request, so that
-- every call misses the cache and goes to the (sandbox) vendors. The emails come from
-- the file BENCH_EMAILS (one per line, all known to the first vendor); with several
-- threads, thread i of n takes lines i, i + n, i + 2n, ...
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
thread_id = 0
thread_count = 1
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end
local emails = {}
local next_index = 0
function init(args)
  local all = {}
  for line in io.lines(os.getenv("BENCH_EMAILS")) do
    table.insert(all, line)
  end
  -- thread_count is not known here; threads take interleaved lines by their id (1 or 2).
  for i = thread_id, #all, 2 do
    table.insert(emails, all[i])
  end
  if #emails == 0 then emails = all end
end
function request()
  next_index = next_index + 1
  local email = emails[((next_index - 1) % #emails) + 1]
  local body = string.format('{"email":"%s"}', email)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
  }, body)
end
