"""The dashboard's web app: one page, the snapshot and its figures as JSON, and the operator's actions.

    GET  /                  the page (static/index.html); with ?token=... it stores the token in a cookie
    GET  /api/snapshot      snapshot.py's document; the page polls it and redraws when `revision` changes
    GET  /api/charts        charts.py's Plotly figures of the same snapshot
    POST /api/promote       {}                 the canary to every device
    POST /api/rollback      {"to": N | null}   publish version N again, or withdraw the canary (null)
    POST /api/revoke        {"node_id": "..."} unregister a device

Bound to a loopback address it needs no token; bound elsewhere every request
needs the token (the cookie set from ?token=, or `Authorization: Bearer`).
Every POST must carry the header `X-Tidings-Action: 1`: a page on another site
cannot add it without a CORS preflight this app never grants, so it cannot
make the operator's browser act on the dashboard.
"""

from __future__ import annotations

import ipaddress
import secrets
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from pydantic import BaseModel

from tidings.server.dashboard import actions
from tidings.server.dashboard.charts import figures
from tidings.server.dashboard.snapshot import Console, NoFederationState, snapshot

STATIC = Path(__file__).with_name("static")
COOKIE = "tidings_dashboard"
ACTION_HEADER = "x-tidings-action"


class Rollback(BaseModel):
    to: int | None = None


class Revoke(BaseModel):
    node_id: str


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(console: Console, token: str | None = None) -> FastAPI:
    """`token`: required on every request when set (always set it when not bound to loopback)."""
    app = FastAPI(title="Tidings operator console", docs_url=None, redoc_url=None, openapi_url=None)
    plotly_js = Path(str(files("plotly") / "package_data" / "plotly.min.js"))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None:
            offered = request.query_params.get("token") if request.url.path == "/" else None
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            presented = offered or request.cookies.get(COOKIE) or bearer
            if not presented or not secrets.compare_digest(presented, token):
                return PlainTextResponse("this dashboard needs its token: open the address "
                                         "`tidings federation dashboard` printed", status_code=401)
            if offered:  # keep it out of the address bar and the history
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return response
        if request.method == "POST" and request.headers.get(ACTION_HEADER) != "1":
            return PlainTextResponse(f"actions need the header {ACTION_HEADER}: 1", status_code=403)
        return await call_next(request)

    @app.exception_handler(NoFederationState)
    async def no_state(request: Request, exc: NoFederationState):
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(actions.ActionRefused)
    async def refused(request: Request, exc: actions.ActionRefused):
        return JSONResponse({"error": str(exc)}, status_code=409)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly():
        return FileResponse(plotly_js, media_type="text/javascript")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:
            raise HTTPException(404)
        return FileResponse(path)

    @app.get("/api/snapshot")
    def get_snapshot():
        return snapshot(console)

    @app.get("/api/charts")
    def get_charts():
        return figures(snapshot(console))

    @app.post("/api/promote")
    def post_promote():
        return actions.promote(console)

    @app.post("/api/rollback")
    def post_rollback(body: Rollback):
        return actions.roll_back(console, body.to)

    @app.post("/api/revoke")
    def post_revoke(body: Revoke):
        return actions.revoke(console, body.node_id)

    return app


def serve(console: Console, host: str, port: int, token: str | None, verbose: bool = False) -> None:
    import uvicorn

    uvicorn.run(create_app(console, token), host=host, port=port, log_level="info" if verbose else "warning")
