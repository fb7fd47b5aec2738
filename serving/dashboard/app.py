"""The dashboard's ASGI application (placeholder until the pages land)."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def _home(request):
    return PlainTextResponse("Winback dashboard")


app = Starlette(routes=[Route("/", _home)])
