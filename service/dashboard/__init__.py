"""The web dashboard: server-rendered page shells plus a little vanilla JS that reads /v1.

Pages carry no data. Each shell names its page and the ids in its URL; the page's ES module
fetches everything from the REST API with the bearer token the login form keeps in
``sessionStorage``, so the dashboard sees exactly what the token's owner may see through the API
and needs no session of its own. ``service.app.create_app`` includes :data:`router`.
"""

from __future__ import annotations

from .routes import router

__all__ = ["router"]
