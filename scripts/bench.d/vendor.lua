-- GET of the sandbox vendor itself (PDL person enrich), to measure the vendor's own
-- latency in the same run as the miss scenario.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
wrk.headers["X-Api-Key"] = "sandbox"
