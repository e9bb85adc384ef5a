"""The floor of an HTTP request on runcast's stack, for benchmarks.http_floor.

    uvicorn benchmarks.floor_app:raw       # a bare ASGI app: uvicorn and h11 alone
    uvicorn benchmarks.floor_app:app       # FastAPI with one empty async route

Both answer `GET /ping` with a small JSON body and nothing else.
"""

from __future__ import annotations

from fastapi import FastAPI

BODY = b'{"ok":true}'


async def raw(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


app = FastAPI(title="an empty route (benchmark floor)")


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}
