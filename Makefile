# The two commands of the README's Quick start. Everything else is `tongbao --help`.
.PHONY: start test bench

start:  ## install, migrate SQLite under ./var, seed demo data, serve on 127.0.0.1:8000
	@scripts/start

test:   ## install dev dependencies, lint, type-check, run every test on SQLite and PostgreSQL
	@scripts/test

bench:  ## the benchmark table (bench/run --quick for a one-minute run)
	@bench/run
