-- POST /v1/email/enrich with the emails of the file BENCH_EMAILS in turn (one per line,
-- all known to the first vendor): for the miss scenario a file of emails never asked
-- before, so that every call misses the cache and goes to the (sandbox) vendors; for
-- items-single the 100 cached emails of the bulk scenario, round and round. With several
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
