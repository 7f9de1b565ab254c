"""The store's web window: HTTP API, login, pages with trend charts and comparisons (``blackbox store web``).

* :mod:`~blackbox.web.auth`     tokens, users, sessions, roles and the per-site rule
* :mod:`~blackbox.web.queries`  batch search, chart series, comparison, access log
* :mod:`~blackbox.web.api`      ``/api/v1``: JSON and CSV
* :mod:`~blackbox.web.pages`    server-rendered pages (``templates/``, ``static/``)
* :mod:`~blackbox.web.app`      the application and the process that serves it
"""
