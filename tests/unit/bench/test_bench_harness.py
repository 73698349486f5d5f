"""The bench harness's own arithmetic: percentiles, the rate-limit bound, verdicts, parsers and the report."""

from __future__ import annotations

import math

import pytest

from bench.load import LoadSpec, parse_generator, parse_wrk, wrk_script
from bench.model import BenchResult, Check, fmt, ratio
from bench.profiling import package_of, summarise
from bench.report import render, summary_rows
from bench.stats import Summary, Window, fastest_schedule, limit_bound, median, most_in_window, percentile

PER_SECOND = Window(5, 1.0)
PER_MINUTE = Window(200, 60.0)


def test_percentiles_interpolate_between_ranks() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 99) == pytest.approx(99.01)
    assert percentile(samples, 0) == 1.0 and percentile(samples, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None and median([]) is None
    with pytest.raises(ValueError):
        percentile(samples, 101)


def test_summary_of_latencies() -> None:
    s = Summary.of([0.003, 0.001, 0.002])
    assert (s.count, s.p50, s.max) == (3, 0.002, 0.003)
    assert s.mean == pytest.approx(0.002)
    assert Summary.of([]).p99 is None


def test_fastest_schedule_fills_each_second_window() -> None:
    assert fastest_schedule(12, [PER_SECOND]) == [0.0] * 5 + [1.0] * 5 + [2.0] * 2


def test_two_hundred_calls_are_bound_by_five_per_second() -> None:
    bound = limit_bound(200, [PER_SECOND, PER_MINUTE])
    assert bound.seconds == 39.0
    assert bound.binding == "5/s"
    assert bound.rate == pytest.approx(199 / 39)


def test_beyond_two_hundred_the_minute_window_joins_in() -> None:
    bound = limit_bound(250, [PER_SECOND, PER_MINUTE])
    # The 201st call waits for the first minute to pass; then 5/s again.
    assert bound.seconds == 69.0
    assert bound.binding == "5/s and 200/min together"
    assert limit_bound(400, [PER_MINUTE]).binding == "200/min"


def test_calls_that_fit_at_once_have_no_rate() -> None:
    bound = limit_bound(3, [PER_SECOND])
    assert bound.seconds == 0 and bound.rate is None


def test_most_in_window_counts_half_open_windows() -> None:
    times = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    # (t - 1, t]: at t = 1.0 the call at 0.0 has left the window.
    assert most_in_window(times, 1.0) == 6
    assert most_in_window([], 1.0) == 0


def test_checks_give_verdicts_and_targets() -> None:
    assert Check("r", 0.9, ">=", 0.85).verdict == "pass"
    assert Check("r", 0.8, ">=", 0.85).verdict == "FAIL"
    assert Check("r", None, ">=", 0.85).verdict == "n/a"
    assert Check("429", 0.0, "<=", 0, unit="calls").verdict == "pass"
    assert Check("r", 1, ">=", 0.85).target_text == "≥ 0.85"
    assert ratio(2.0, 4.0) == 0.5 and ratio(None, 1.0) is None and ratio(1.0, 0.0) is None


def test_numbers_are_formatted_for_tables() -> None:
    assert [fmt(None), fmt(12345.6), fmt(123.4), fmt(12.34), fmt(1.234), fmt(0.01234)] == [
        "—",
        "12,346",
        "123",
        "12.3",
        "1.23",
        "0.0123",
    ]


def test_report_lists_every_check_and_the_machine() -> None:
    ok = BenchResult("B1", "ingest", method=["wrk"])
    ok.figure("ours: throughput", 1234.0, "req/s")
    ok.check("throughput ours / reference", 0.9, ">=", 0.85)
    bad = BenchResult("B3", "pipeline")
    bad.check("rate ours / reference", 0.5, ">=", 0.8)
    broken = BenchResult("B4", "activation", error="boom | pipe")
    text = render([ok, bad, broken], command="python -m bench", machine={"CPU": "x"}, started="now")
    assert "| B1 | throughput ours / reference | 0.9 | ≥ 0.85 | pass |" in text
    assert "| B3 | rate ours / reference | 0.5 | ≥ 0.8 | FAIL |" in text
    assert "error: boom \\| pipe" in text
    assert "| CPU | x |" in text and "1,234" in text
    assert ok.passed and not bad.passed and not broken.passed
    assert summary_rows([BenchResult("B5", "rss")])[0][-1] == "figures only (below)"


def test_wrk_result_line_is_parsed() -> None:
    out = (
        "Running 10s test\n"
        'BENCH_WRK {"requests":20000,"duration_us":10000000,"connect":0,"read":1,"write":0,"status":2,'
        '"timeout":0,"p50_us":1500,"p99_us":9000,"max_us":20000}\n'
    )
    result = parse_wrk(out)
    assert result.throughput == 2000.0
    assert (result.p50_ms, result.p99_ms, result.bad) == (1.5, 9.0, 3)
    with pytest.raises(RuntimeError):
        parse_wrk("nothing")


def test_wrk_script_sets_method_body_and_headers() -> None:
    script = wrk_script(LoadSpec("http://x/", "POST", '{"a":1}', {"Content-Type": "application/json"}))
    assert "wrk.method = [==[POST]==]" in script
    assert 'wrk.body = [==[{"a":1}]==]' in script
    # `[[` would open a Lua long string: the index needs the spaces.
    assert "wrk.headers[ [==[Content-Type]==] ] = [==[application/json]==]" in script


def test_generator_result_counts_non_redirect_errors() -> None:
    line = (
        'BENCH_RESULT {"requests": 10, "seconds": 2.0, "throughput": 5.0, "offered_rate": 5.0, "p50_ms": 1.0,'
        ' "p99_ms": 3.0, "max_ms": 4.0, "statuses": {"302": 8, "503": 2}, "errors": 1}'
    )
    result = parse_generator(line)
    assert result.bad == 3 and result.throughput == 5.0 and "open loop" in result.tool


def test_profile_summary_groups_self_time_by_package() -> None:
    root = "/work/main"
    site = "/work/main/.venv/lib/python3.11/site-packages"
    raw = "\n".join(
        [
            f"run (/usr/lib/python3.11/asyncio/runners.py);handle ({root}/services/gateway/app.py);"
            f"execute ({site}/sqlalchemy/engine/base.py) 3",
            "run (/usr/lib/python3.11/asyncio/runners.py);emit (/usr/lib/python3.11/logging/__init__.py) 1",
        ]
    )
    summary = summarise(raw, label="x", root=root, expected=8)
    assert summary.samples == 4 and summary.busy == 0.5
    assert summary.by_package[0] == ("sqlalchemy", 75.0)
    assert ("stdlib logging", 25.0) in summary.by_package
    assert ("services.gateway: handle", 75.0) in summary.top_total
    assert all(not name.endswith(": run") for name, _ in summary.top_total)
    assert package_of(f"{root}/shared/bus/broker.py", root) == "shared.bus"
    assert math.isclose(sum(p for _, p in summary.by_package), 100.0)
