"""``emostream serve``: live calls over WebSockets (Twilio Media Streams, a generic ingest), events, web pages.

Needs the ``[server]`` extra (Starlette, uvicorn, websockets, prometheus-client).
"""
