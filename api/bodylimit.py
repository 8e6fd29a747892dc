"""How large a request's body may be: refused as it arrives, before anything reads it whole.

FastAPI reads and parses a JSON body before it checks the caller, so a body of hundreds of
megabytes, even without a token, took that much memory. Starlette's own limit answers in plain
text whenever a length was declared; this one answers 413 as a problem, like every refusal.
"""

from fastapi import HTTPException

from api.problems import problem

JSON_BODY = 1024 * 1024  # bytes: a command's body is a few kilobytes at most
MAX_UPLOAD = 20 * 1024 * 1024  # a delivery import's file
UPLOAD_BODY = MAX_UPLOAD + 64 * 1024  # with a form's boundaries and part headers around it
TOO_LARGE = "the request body is larger than {} MB"


def limit_for(path: str) -> int:
    return UPLOAD_BODY if path.endswith("/deliveries/import") else JSON_BODY


class BodyLimit:
    """Plain ASGI: a declared length past the limit is refused before the app runs; a body sent in
    chunks is counted as it arrives, and refused as soon as it passes the limit."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = limit_for(scope["path"])
        refusal = TOO_LARGE.format(limit // (1024 * 1024))
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await problem(413, "Content too large", refusal)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, refusal)  # FastAPI's kind: its body reading lets it through as it is
            return message

        await self.app(scope, counted, send)
