"""What both HTTP apps (inference and submit service) share: the error body, and bodies that
cannot be parsed because they nest too deeply."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["error", "refuse_deep_json"]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body of our APIs: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def refuse_deep_json(app: Any) -> None:
    """Answer 400 for a JSON body nested deeper than Python's parser recurses (not a 500)."""

    @app.exception_handler(RecursionError)
    async def too_deep(request: Any, err: RecursionError) -> JSONResponse:
        return error(400, "the request body is nested too deeply to be parsed")
