"""The one place that prints: progress and errors go where the caller points them."""

import io

from pipeline.console import Reporter


def test_errors_go_to_the_error_stream_given() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(out, err)
    reporter.line("progress")
    reporter.error("broken")
    assert out.getvalue() == "progress\n"
    assert err.getvalue() == "error: broken\n"
