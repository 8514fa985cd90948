"""The web service: a Starlette app over the engine (pages, the status fragment, the JSON API)."""
