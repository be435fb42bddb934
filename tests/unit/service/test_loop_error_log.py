"""`LoopErrorLog` (asyncio's exception handler in the workers): the first error of a kind at once, with its
traceback; its repeats as one line with a count per interval, not one traceback each."""

import asyncio
import errno
import json
import logging
import os
from typing import Any

from model_service.operations.logs import JsonLog, JsonLogHandler
from model_service.server.event_loop import LoopErrorLog


def read_lines(read_end: int) -> list[dict[str, Any]]:
    os.set_blocking(read_end, False)
    try:
        data = os.read(read_end, 1 << 20)
    except BlockingIOError:
        data = b""
    return [json.loads(line) for line in data.splitlines()]


def test_repeats_are_one_line_with_a_count() -> None:
    read_end, write_end = os.pipe()
    handler = LoopErrorLog(JsonLog(write_end), interval_s=0.05)

    async def flood() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(1000):  # as asyncio's accept loop reports each connection it could not accept
            error = OSError(errno.EMFILE, "Too many open files")
            handler(loop, {"message": "socket.accept() out of system resource", "exception": error})
        handler(loop, {"message": "another kind"})
        await asyncio.sleep(0.2)

    try:
        asyncio.run(flood())
        lines = read_lines(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert [(line["event"], line["message"]) for line in lines] == [
        ("event_loop_error", "socket.accept() out of system resource"),
        ("event_loop_error", "another kind"),
        ("event_loop_error_repeated", "socket.accept() out of system resource"),
    ]
    first, _, repeated = lines
    assert first["error"] == "OSError: [Errno 24] Too many open files"
    assert "traceback" in first
    assert repeated["count"] == 999


def test_a_logging_record_with_an_exception_is_one_json_line() -> None:
    read_end, write_end = os.pipe()
    handler = JsonLogHandler(write_end)
    logger = logging.getLogger("uvicorn.error.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("in the app")
        except ValueError:
            logger.exception("Exception in ASGI application\n")
        (line,) = read_lines(read_end)
    finally:
        logger.removeHandler(handler)
        os.close(read_end)
        os.close(write_end)
    assert line["level"] == "ERROR"
    assert line["logger"] == "uvicorn.error.test"
    assert line["message"] == "Exception in ASGI application\n"
    assert line["error"] == "ValueError: in the app"
    assert line["traceback"].startswith("Traceback (most recent call last):")
