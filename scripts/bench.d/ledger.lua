-- GET with an API key (BENCH_KEY): a page of the credit ledger.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
