"""The operator dashboard: `python -m runner.dashboard`, served on 127.0.0.1.

Server-rendered pages (Starlette, Jinja2 templates) that update themselves with htmx,
vendored under `static/`; no build step and no third-party CDN. It reads the tasks table
through its status index (never a Scan) and Step Functions, and acts through the same
client the CLI uses. Never in the Lambda zip (serverless.yml's package patterns).

- `settings`: what it serves and how (port, read-only, redaction, the token).
- `security`: the token and its cookie, the Host check, CSRF, response headers.
- `counts`, `reads`, `throughput`: what the pages show, with their caches.
- `forms`: a task type's input model as a form.
- `pages`, `actions`: the routes; `app` puts them together; `serve` runs uvicorn.
"""
