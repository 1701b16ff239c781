"""The access log never shows a query string: a token put in a URL must not land in it."""

from __future__ import annotations

import logging

import uvicorn

from service.server import ACCESS_LOGGER, RedactQueryStrings, Server, redact_access_log

ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %d'  # uvicorn's access log call


def access_record(path: str) -> logging.LogRecord:
    return logging.LogRecord(
        ACCESS_LOGGER,
        logging.INFO,
        __file__,
        1,
        ACCESS_FORMAT,
        ("127.0.0.1:5000", "GET", path, "1.1", 200),
        None,
    )


def test_the_query_string_is_redacted_and_the_path_kept():
    record = access_record("/v1/jobs/3/events?token=dn_secret&after=12")
    assert RedactQueryStrings().filter(record) is True
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/jobs/3/events?[redacted] HTTP/1.1" 200'
    plain = access_record("/v1/jobs/3")
    RedactQueryStrings().filter(plain)
    assert plain.getMessage() == '127.0.0.1:5000 - "GET /v1/jobs/3 HTTP/1.1" 200'


def test_the_server_installs_the_filter_on_uvicorns_access_logger(caplog):
    logger = logging.getLogger(ACCESS_LOGGER)
    before = list(logger.filters)
    try:
        Server(uvicorn.Config(app=None), app=None)  # type: ignore[arg-type]
        redact_access_log()  # idempotent
        assert sum(isinstance(f, RedactQueryStrings) for f in logger.filters) == 1
        logger.addHandler(caplog.handler)  # uvicorn's logging config stops propagation
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            logger.info(ACCESS_FORMAT, "10.0.0.1:1", "GET", "/dashboard?token=dn_x", "1.1", 200)
        assert "dn_x" not in caplog.text and "/dashboard?[redacted]" in caplog.text
    finally:
        logger.removeHandler(caplog.handler)
        logger.filters[:] = before
