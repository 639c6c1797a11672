"""The web journal: the call journal in a browser, served by the daemon's own app at ``/``.

Theory of operation
-------------------
The page is a client of the public JSON API (what the page needs, 1C can have): the server
renders the frame (the filters as a plain GET form, the table's head, who is signed in) and
small ES modules under ``/static/`` fill the journal from ``GET /api/v1/calls`` and keep it
current with the ``/api/v1/changes`` long-poll.

People sign in (``pbxjournal users``, :mod:`httpd.web.accounts`); their browser then holds
a session cookie (HttpOnly, SameSite=Strict, Secure behind TLS) that the API accepts in place
of a client's Basic or Bearer credentials, with the session's CSRF token in ``X-CSRF-Token``
for every write (:func:`session_middleware`). Machines keep their credentials: a request with
an ``Authorization`` header is judged by it alone.

Only the sign-in page and the static files are served without a session; ``/`` without one
redirects to the sign-in page.
"""

from __future__ import annotations

from httpd.web.accounts import Account, Accounts, Session, SignInThrottle
from httpd.web.pages import ACCOUNTS, serve_page, setup_pages
from httpd.web.session import SESSION, session_middleware

__all__ = [
    "ACCOUNTS",
    "SESSION",
    "Account",
    "Accounts",
    "Session",
    "SignInThrottle",
    "serve_page",
    "session_middleware",
    "setup_pages",
]
