"""Routes of the dashboard: HTML shells at ``/``… and the static assets under ``/ui/static``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from ..jobs.states import as_constants
from ..models import Architecture, Job, LatencyTable

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
STATIC_PREFIX = "/ui/static"

templates = Jinja2Templates(directory=str(_HERE / "templates"))

# Everything the pages load comes from this origin; no inline script or style is needed.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

router = APIRouter(include_in_schema=False)


def _page(request: Request, template: str, page: str, title: str, **ctx: Any) -> HTMLResponse:
    # The job statuses go to every page (``<body data-job-statuses>``, read by api.js), so
    # the scripts spell none of them.
    context = {
        "page": page,
        "title": title,
        "static": STATIC_PREFIX,
        "job_statuses": as_constants(),
        **ctx,
    }
    response = templates.TemplateResponse(request, template, context)
    response.headers.update(_SECURITY_HEADERS)
    return response


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    return _page(request, "jobs.html", "jobs", "Jobs")


@router.get("/jobs")
def jobs_redirect() -> RedirectResponse:
    return RedirectResponse("/", status_code=308)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", "login", "Sign in")


def _error_page(
    request: Request, status: int, message: str, back: str, back_text: str
) -> HTMLResponse:
    response = _page(
        request,
        "error.html",
        "error",
        "Not found" if status == 404 else "Bad address",
        status_code=status,
        message=message,
        back=back,
        back_text=back_text,
    )
    response.status_code = status
    return response


_MAX_ID = 2**63 - 1


def _missing(
    request: Request, model: type[Any], raw_id: str, noun: str, back: str, back_text: str
) -> HTMLResponse | int:
    """The id of ``raw_id`` when such a row exists, else the HTML error page (422 / 404).

    Only whether the id exists at all is looked at (the token lives in the browser, so the
    page cannot know the project): another project's row still gets the page, whose script
    then says it is not visible.
    """
    if not raw_id.isdigit() or int(raw_id) > _MAX_ID:
        return _error_page(request, 422, f"“{raw_id}” is not a {noun} number.", back, back_text)
    ident = int(raw_id)
    factory = getattr(request.app.state, "session_factory", None)
    if factory is not None:
        with factory() as session:
            if session.get(model, ident) is None:
                return _error_page(request, 404, f"There is no {noun} #{ident}.", back, back_text)
    return ident


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> HTMLResponse:
    found = _missing(request, Job, job_id, "job", "/", "Back to the jobs")
    if isinstance(found, HTMLResponse):
        return found
    factory = getattr(request.app.state, "session_factory", None)
    if factory is not None:
        with factory() as session:
            kind = session.scalar(select(Job.kind).where(Job.id == found))
        if kind == "sweep":  # a family of searches: its trials, not one search's curves
            return _page(request, "sweep.html", "sweep", f"Sweep {found}", job_id=found)
    return _page(request, "job.html", "job", f"Job {found}", job_id=found)


#: How many jobs the compare view overlays (one colour each).
COMPARE_MIN, COMPARE_MAX = 2, 8


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, ids: str = "") -> HTMLResponse:
    """Overlaid epoch curves of 2 to 8 jobs, ``?ids=1,2,3``. The ids are checked here (not
    integers, too few or many: 422; a job that does not exist: 404); whether the token may see
    each job is for the page's script to find out, as on a job page."""
    back, back_text = "/", "Back to the jobs"
    parts = [p.strip() for p in ids.split(",") if p.strip()]
    for part in parts:
        if not part.isdigit() or int(part) > _MAX_ID:
            return _error_page(request, 422, f"“{part[:40]}” is not a job number.", back, back_text)
    wanted = list(dict.fromkeys(int(p) for p in parts))
    if not COMPARE_MIN <= len(wanted) <= COMPARE_MAX:
        return _error_page(
            request,
            422,
            f"Compare {COMPARE_MIN} to {COMPARE_MAX} different jobs (?ids=1,2,…); "
            f"{len(wanted)} given.",
            back,
            back_text,
        )
    factory = getattr(request.app.state, "session_factory", None)
    if factory is not None:
        with factory() as session:
            found = set(session.scalars(select(Job.id).where(Job.id.in_(wanted))))
        missing = [i for i in wanted if i not in found]
        if missing:
            listed = ", ".join(f"#{i}" for i in missing)
            noun = "job" if len(missing) == 1 else "jobs"
            return _error_page(request, 404, f"There is no {noun} {listed}.", back, back_text)
    return _page(
        request,
        "compare.html",
        "compare",
        "Compare jobs " + ", ".join(f"#{i}" for i in wanted),
        job_ids=wanted,
    )


@router.get("/architectures", response_class=HTMLResponse)
def architectures_page(request: Request) -> HTMLResponse:
    return _page(request, "architectures.html", "architectures", "Architectures")


@router.get("/architectures/{arch_id}", response_class=HTMLResponse)
def architecture_page(request: Request, arch_id: str) -> HTMLResponse:
    found = _missing(
        request,
        Architecture,
        arch_id,
        "architecture",
        "/architectures",
        "Back to the architectures",
    )
    if isinstance(found, HTMLResponse):
        return found
    return _page(
        request, "architecture.html", "architecture", f"Architecture {found}", arch_id=found
    )


@router.get("/latency-tables", response_class=HTMLResponse)
def latency_tables_page(request: Request) -> HTMLResponse:
    return _page(request, "latency.html", "latency", "Latency tables", table_id=None)


@router.get("/latency-tables/{table_id}", response_class=HTMLResponse)
def latency_table_page(request: Request, table_id: str) -> HTMLResponse:
    found = _missing(
        request,
        LatencyTable,
        table_id,
        "latency table",
        "/latency-tables",
        "Back to the latency tables",
    )
    if isinstance(found, HTMLResponse):
        return found
    return _page(request, "latency.html", "latency", f"Latency table {found}", table_id=found)


@router.get(STATIC_PREFIX + "/{path:path}")
def static_asset(path: str) -> FileResponse:
    """Serve a file of ``static/``; revalidated on every load (ETag) so edits show at once."""
    target = (STATIC_DIR / path).resolve()
    if (
        not target.is_file()
        or STATIC_DIR not in target.parents
        or target.suffix not in _STATIC_TYPES
    ):
        raise HTTPException(status_code=404, detail="no such asset")
    return FileResponse(
        target,
        media_type=_STATIC_TYPES[target.suffix],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
