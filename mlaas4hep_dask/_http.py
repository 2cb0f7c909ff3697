"""What both HTTP apps (inference and submit service) share: the error body, bodies that
cannot be parsed because they nest too deeply, the offline API page, and documented bodies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["body", "error", "offline_docs", "refuse_deep_json"]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body of our APIs: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def refuse_deep_json(app: Any) -> None:
    """Answer 400 for a JSON body nested deeper than Python's parser recurses (not a 500)."""

    @app.exception_handler(RecursionError)
    async def too_deep(request: Any, err: RecursionError) -> JSONResponse:
        return error(400, "the request body is nested too deeply to be parsed")


def offline_docs(app: Any) -> None:
    """``/docs``: Swagger UI from the installed ``swagger-ui-py`` package, not from a CDN.

    The page works without internet (batch farms, laptops on a train), and its links are
    relative, so it works behind a proxy that serves the app under a path prefix.  Create the
    app with ``docs_url=None``.
    """
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    static = files("swagger_ui") / "static"
    app.mount("/docs-assets", StaticFiles(directory=str(static)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title=f"{app.title}: API",
            swagger_js_url="docs-assets/swagger-ui-bundle.js",
            swagger_css_url="docs-assets/swagger-ui.css",
            swagger_favicon_url="docs-assets/favicon-32x32.png",
        )


def body(schema: dict[str, Any], examples: dict[str, Any], binary: Sequence[str] = ()) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads its own body: its JSON schema and named examples
    (so "Try it out" on the API page sends a real request), and its binary media types."""
    content: dict[str, Any] = {
        "application/json": {"schema": schema, "examples": {k: {"value": v} for k, v in examples.items()}}
    }
    for kind in binary:
        content[kind] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}
