-- POST /v1/email/enrich with a fixed body (BENCH_BODY), key (BENCH_KEY) and optional
-- Idempotency-Key (BENCH_IDEM).
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local idem = os.getenv("BENCH_IDEM")
if idem and idem ~= "" then wrk.headers["Idempotency-Key"] = idem end
