"""The dashboard in a real browser: headless Chromium (Debian's, through its chromedriver)
driven by Selenium against the served local stack, as an operator uses it after `make
dev`: the URL it printed, the overview, a task followed from creation to DONE without a
reload, a retry whose new execution appears, an action refused without the token.

A screenshot of each page goes to .artifacts/screenshots/ (ignored by git); the
README's, in docs/screenshots/, are copies of them.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from runner.dashboard.counts import counted_statuses
from tests.e2e.conftest import ROOT, ServedStack

pytestmark = pytest.mark.slow

SCREENSHOTS = ROOT / ".artifacts" / "screenshots"
# Any chromium and chromedriver on PATH, as `make browser` accepts (Debian's by default).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# The flags this machine's Chromium needs (no sandbox as root; no calls to Google's hosts,
# which the closed network refuses).
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def _driver(profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are missing: `make browser` installs them (apt)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="dashboard-browser-")
    driver = _driver(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def dashboard(local_stack: ServedStack, browser: Any) -> str:
    """The dashboard's base URL (its random prefix included), the browser logged in
    through the printed URL."""
    assert local_stack.dashboard_url, "serve printed no dashboard URL"
    login = urlsplit(local_stack.dashboard_url)
    browser.get(local_stack.dashboard_url)
    assert "token" not in browser.current_url  # swapped for the cookie at once
    return f"{login.scheme}://{login.netloc}{login.path.rstrip('/')}"


@pytest.fixture(autouse=True)
def no_console_errors(browser: Any, dashboard: str) -> Iterator[None]:
    """Every test ends with nothing at SEVERE on the console from the dashboard: a
    Content-Security-Policy violation (an inline script or style) or a file it could not
    load (an unvendored one). The refusals the tests provoke (401, 403) and other
    servers' pages are not the dashboard's errors."""
    browser.get_log("browser")  # what earlier tests left
    yield

    def the_dashboards(entry: dict[str, Any]) -> bool:
        message = str(entry.get("message", ""))
        if entry.get("source") != "network":
            return True
        return message.startswith(dashboard) and not re.search(r"status of 40[13]", message)

    severe = [
        e for e in browser.get_log("browser") if e.get("level") == "SEVERE" and the_dashboards(e)
    ]
    assert not severe, severe


def shoot(browser: Any, name: str) -> None:
    """The whole page, beyond the window (Chromium's DevTools screenshot)."""
    import base64

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    (SCREENSHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def mark_page(browser: Any) -> None:
    """A value that lives as long as the page: a reload or navigation drops it."""
    browser.execute_script("window.__notReloaded = true")


def not_reloaded(browser: Any) -> bool:
    return browser.execute_script("return window.__notReloaded === true") is True


def attribute(browser: Any, selector: str, name: str) -> str:
    """An element's attribute, read in one step (htmx may swap the element between two)."""
    value = browser.execute_script(
        "const e = document.querySelector(arguments[0]);"
        " return e ? e.getAttribute(arguments[1]) : null",
        selector,
        name,
    )
    return "" if value is None else str(value)


def text_of(browser: Any, selector: str) -> str:
    value = browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
        selector,
    )
    return "" if value is None else str(value).strip()


def live_status(browser: Any) -> str:
    return attribute(browser, "#task-live", "data-status")


def test_the_overview_shows_counts_and_updates_by_itself(
    local_stack: ServedStack, browser: Any, dashboard: str
) -> None:
    from selenium.webdriver.common.by import By

    # Given the overview, open
    browser.get(f"{dashboard}/")
    assert browser.title.startswith("Overview")
    statuses = [
        e.get_attribute("data-status") for e in browser.find_elements(By.CSS_SELECTOR, "a.card")
    ]
    # The non-final statuses, in the model's order, whatever statuses it has
    assert statuses == [s.value for s in counted_statuses()]
    assert "PENDING" in statuses and "DONE" not in statuses
    mark_page(browser)

    def processing() -> int:
        selector = 'a.card[data-status="PROCESSING"] .figure'
        return int(attribute(browser, selector, "data-count") or 0)

    before = processing()

    # When a task starts running for a while
    created = local_stack.run(
        ".venv/bin/python", "-m", "runner.cli", "create-task", "sleep-task", "--seconds", "8"
    )
    assert created.returncode == 0, created.stderr

    # Then the PROCESSING card counts it without a reload (counts are cached 5 s, the
    # page asks every 5 s)
    until(lambda: processing() > before, 20, "the overview to count the PROCESSING task")
    assert not_reloaded(browser)
    shoot(browser, "overview")


def test_a_task_is_followed_from_creation_to_done_on_its_page_without_reloading(
    browser: Any, dashboard: str
) -> None:
    from selenium.webdriver.common.by import By

    # Given the form the SLEEP_TASK's input model makes
    browser.get(f"{dashboard}/new?type=SLEEP_TASK")
    field = browser.find_element(By.NAME, "f.seconds")
    field.clear()
    field.send_keys("3")
    shoot(browser, "new-task")
    browser.find_element(By.ID, "review").click()

    # When the operator confirms it
    until(lambda: "Create a SLEEP_TASK task?" in browser.page_source, 10, "the confirmation")
    browser.find_element(By.ID, "confirm").click()

    # Then its page shows it PENDING or PROCESSING, and then DONE, by itself
    until(lambda: "/task?id=" in browser.current_url, 10, "the task's page")
    mark_page(browser)
    seen = [live_status(browser)]
    assert seen[0] in ("PENDING", "PROCESSING"), seen

    def done() -> bool:
        status = live_status(browser)
        if status != seen[-1]:
            seen.append(status)
        return status == "DONE"

    until(done, 30, "the task to be DONE on its page")
    assert not_reloaded(browser), "the page was reloaded"
    assert "PROCESSING" in seen, seen
    assert '"slept"' in browser.page_source or "Result" in browser.page_source
    shoot(browser, "task-done")


def test_the_functions_metrics_reach_cloudwatch_as_on_aws(local_stack: ServedStack) -> None:
    """The EMF lines processStream printed became CloudWatch metrics (runner.local.emf
    plays CloudWatch Logs' part), in the namespace the template gives the functions, with
    the dimensions runner.metrics prints: what the overview's per-minute chart reads."""
    from runner import metrics

    namespace = local_stack.env[metrics.NAMESPACE_ENV]
    assert namespace.startswith("TaskRunner/")
    cloudwatch = local_stack.client("cloudwatch")

    def succeeded() -> list[Any]:
        found = cloudwatch.list_metrics(Namespace=namespace, MetricName=metrics.SUCCEEDED)
        return [
            m
            for m in found["Metrics"]
            if m["Dimensions"] == [{"Name": "type", "Value": "SLEEP_TASK"}]
        ]

    until(succeeded, 10, "a TaskSucceeded metric for SLEEP_TASK")
    names = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]}
    assert {metrics.SUCCEEDED, metrics.HANDLER_DURATION, metrics.QUEUE_LATENCY} <= names


def test_retry_a_failed_task_and_see_its_new_execution_appear(
    local_stack: ServedStack, browser: Any, dashboard: str
) -> None:
    from selenium.webdriver.common.by import By

    # Given a task that failed (its input is invalid: permanently, no execution)
    task_id = f"browser-retry-{time.time_ns()}"
    dynamodb = local_stack.client("dynamodb")
    dynamodb.put_item(
        TableName=local_stack.table_name,
        Item={
            "id": {"S": task_id},
            "type": {"S": "SLEEP_TASK"},
            "status": {"S": "PENDING"},
            "data": {"M": {"seconds": {"S": "not a number"}}},
        },
    )
    local_stack.wait_for(task_id, {"FAILED"})
    browser.get(f"{dashboard}/task?id={task_id}")
    assert not browser.find_elements(By.CSS_SELECTOR, "details.execution")

    # When the operator retries it and confirms
    browser.find_element(By.LINK_TEXT, "Retry").click()
    until(lambda: "Retry task" in browser.page_source, 10, "the confirmation")
    browser.find_element(By.ID, "confirm").click()

    # Then the new execution is on the page, and its state history grows by itself: it is
    # first seen RUNNING (the retry workflow's first attempt waits), then closed
    until(lambda: browser.find_elements(By.CSS_SELECTOR, "details.execution"), 10, "an execution")
    mark_page(browser)
    assert text_of(browser, "details.execution summary .badge") == "RUNNING"
    assert "Retry started" in browser.page_source
    (execution,) = local_stack.get_task(task_id)["executions"]
    assert execution.rsplit(":", 1)[-1] in browser.page_source

    def closed() -> bool:
        return text_of(browser, "details.execution summary .badge") not in ("RUNNING", "")

    until(closed, 60, "the execution to end, shown on the page")
    assert not_reloaded(browser)
    rows = browser.execute_script(
        "return document.querySelectorAll('details.execution table.history tbody tr').length"
    )
    assert rows >= 3  # started, RunTask entered, ..., ended
    shoot(browser, "task-retried")


def test_an_action_without_the_token_is_refused(
    local_stack: ServedStack, browser: Any, dashboard: str
) -> None:
    from selenium.webdriver.common.by import By

    task_id = f"browser-refused-{time.time_ns()}"
    local_stack.client("dynamodb").put_item(
        TableName=local_stack.table_name,
        Item={
            "id": {"S": task_id},
            "type": {"S": "SLEEP_TASK"},
            "status": {"S": "PENDING"},
            "data": {"M": {}},
        },
    )
    local_stack.wait_for(task_id, {"FAILED"})

    # A page on another origin (another port of this machine, so the cookie goes along)
    # that posts the retry form to the dashboard: no CSRF token, a foreign Origin
    attack = tempfile.mkdtemp(prefix="attack-")
    Path(attack, "index.html").write_text(
        f'<form id="f" method="post" action="{dashboard}/task/retry">'
        f'<input name="id" value="{task_id}"></form>'
        '<button id="go" onclick="document.getElementById(\'f\').submit()">go</button>'
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=attack)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        browser.find_element(By.ID, "go").click()
        until(lambda: "Refused" in browser.page_source, 10, "the dashboard's refusal")
        assert "another origin" in browser.page_source
    finally:
        server.shutdown()
        shutil.rmtree(attack, ignore_errors=True)

    # Without the cookie (a browser that never opened the printed URL): refused too
    browser.delete_all_cookies()
    browser.get(f"{dashboard}/task/retry?id={task_id}")
    assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{dashboard}/")
    assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text

    # And the task was not touched
    task = local_stack.get_task(task_id)
    assert task["status"] == "FAILED" and not task.get("executions")
    browser.get(local_stack.dashboard_url)  # log in again for whatever runs next


def test_a_poll_that_is_refused_marks_the_page_not_updating(
    local_stack: ServedStack, browser: Any, dashboard: str
) -> None:
    # Given the overview, polling every 5 s, in a logged-in browser (whatever the tests
    # before this one left: the printed URL's token starts a session)
    browser.get(local_stack.dashboard_url)
    browser.get(f"{dashboard}/")
    hidden = "const e = document.getElementById('connection'); return e ? e.hidden : null"
    assert browser.execute_script(hidden) is True

    # When the dashboard no longer knows the browser (as after a restart)
    browser.delete_all_cookies()

    # Then the next poll's 401 says so on the page, instead of a page that looks live
    def said() -> bool:
        return (
            browser.execute_script(
                "const e = document.getElementById('connection'); return e && !e.hidden"
            )
            is True
        )

    until(said, 12, "the page to say it is not updating")
    assert "no longer knows this browser" in text_of(browser, "#connection")
    assert "disconnected" in attribute(browser, "body", "class")
    # the refusals this provoked (htmx reports each on the console): not the page's errors
    browser.get_log("browser")
    browser.get(local_stack.dashboard_url)  # log in again for whatever runs next


def test_a_server_on_another_port_never_receives_the_session_or_the_token(
    local_stack: ServedStack, browser: Any, dashboard: str
) -> None:
    """Cookies ignore ports: a cookie scoped to Path=/ would go to every server on
    127.0.0.1 (the moto endpoint, a developer's app) once the operator opens one. The
    session cookie is scoped to the dashboard's random prefix and is not the token."""
    seen: list[str] = []

    class Thief(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.path}\n{self.headers}")
            body = b"<p id='here'>elsewhere</p><img src='/d/'><img src='/anything/deeper'>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Thief)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    thief = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # Given a logged-in operator on a dashboard page
        browser.get(f"{dashboard}/tasks")
        assert "tasks" in browser.title
        cookies = browser.get_cookies()

        # When they open a page of another server on this host, from the dashboard's
        # page and directly, and it loads more from its own server
        browser.execute_script("window.location = arguments[0]", f"{thief}/from-dashboard")
        until(lambda: "elsewhere" in browser.page_source, 10, "the other server's page")
        browser.get(f"{thief}/")
        until(lambda: len(seen) >= 5, 10, "the other server's requests")
    finally:
        server.shutdown()

    # Then no request it received carried the session, the token or the prefix
    token = urlsplit(local_stack.dashboard_url).query.removeprefix("token=")
    prefix = urlsplit(dashboard).path
    received = "\n".join(seen)
    assert "task_runner_dashboard" not in received, received
    assert token not in received and prefix not in received, received
    assert cookies and all(c["path"] == prefix for c in cookies)
