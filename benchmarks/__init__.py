"""`python -m benchmarks [--quick]`: the template's service against its peers, one run, side by side.

`wrk` drives each server in turn (interleaved rounds, so machine drift hits all alike); the report lands in
reports/bench/<run-id>/ (bench.json, bench.md, bench.png) with reports/bench/latest pointing at it.
"""
