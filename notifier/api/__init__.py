"""The HTTP API (`notifier serve`): events in over HTTP, organisers' requests, health.

Modules: `app` (the ASGI app and the server), `auth` (bearer tokens and scopes), `body`
(JSON bodies within limits), `problems` (RFC 9457 errors), `context` (what requests share:
Redis, conferences, the publisher), `openapi` (the event schema in the document), and the
routes: `events`, `conferences`, `registrations`, `updates`, `health`; `admin` holds the
`notifier tokens` commands.
"""
