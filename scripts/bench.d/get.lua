-- GET of BENCH_PATH (the baseline: /healthz).
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
