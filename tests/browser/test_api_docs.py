"""The API docs work offline: Swagger UI renders from the package's own files, with every
request to another host blocked (a cluster without internet)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=2)]


def test_api_docs_render_with_no_network(page, server):
    local = urlsplit(server.url).netloc
    foreign: list[str] = []

    def guard(route):
        if urlsplit(route.request.url).netloc != local:
            foreign.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", guard)
    page.goto(server.url + "/docs")
    title = page.wait_for_selector(".swagger-ui .info .title")
    assert "DenseNAS control plane" in title.inner_text()
    page.get_by_text("/v1/jobs", exact=True).first.wait_for()  # operations listed by path
    assert page.locator(".opblock").count() > 10
    assert foreign == [], f"requests to other hosts: {foreign}"
    html = page.content()
    assert "cdn.jsdelivr" not in html and "fastapi.tiangolo" not in html
