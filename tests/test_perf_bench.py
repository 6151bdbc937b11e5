"""Smoke test of bench/perf.py's wrk glue: the Lua script it writes and how it reads wrk's output."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import perf  # noqa: E402  (bench/perf.py)

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    21.02ms    4.11ms  98.00ms   81.00%
  Latency Distribution
     50%  750.00us
     75%   22.00ms
     90%   25.00ms
     99%    1.20s
  1600 requests in 10.00s, 300.00KB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:    159.95
Transfer/sec:     30.00KB
"""


def test_parse_wrk_reads_rate_percentiles_and_errors():
    result = perf.parse_wrk(WRK_OUTPUT)
    assert result == {"requests": 1600, "rps": 159.95, "p50_ms": 0.75, "p99_ms": 1200.0, "non_2xx": 5,
                      "socket_errors": 3}


def test_parse_wrk_without_finished_requests_has_no_latencies():
    result = perf.parse_wrk(WRK_OUTPUT.replace("1600 requests", "0 requests"))
    assert result["p50_ms"] is None and result["p99_ms"] is None


def test_lua_script_escapes_values_and_reads_the_body_from_a_file(tmp_path):
    script = perf.lua_script("POST", "/api/v1/predictions", {"Authorization": 'Bearer k.s"\\'},
                             tmp_path / "body")
    assert f'io.open("{tmp_path}/body", \'rb\')' in script
    assert 'wrk.headers["Authorization"] = "Bearer k.s\\034\\092"' in script
    assert 'wrk.method = "POST"' in script

