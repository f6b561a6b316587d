// The dashboard's own script (no inline script: the Content-Security-Policy allows none).
// A page that polls says when its figures stopped being current: a refresh refused (401
// after the dashboard restarted, 503 while AWS does not answer) or not answered at all.
(function () {
  "use strict";
  function mark(text) {
    document.body.classList.add("disconnected");
    var line = document.getElementById("connection");
    if (line) {
      line.textContent = text;
      line.hidden = false;
    }
  }
  function clear() {
    document.body.classList.remove("disconnected");
    var line = document.getElementById("connection");
    if (line) {
      line.hidden = true;
    }
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (status === 401 || status === 404) {
      mark("Not updating: the dashboard no longer knows this browser (was it restarted?)." +
        " Open the URL it printed.");
    } else {
      mark("Not updating: the last refresh failed (HTTP " + status + "); still trying.");
    }
  });
  document.addEventListener("htmx:sendError", function () {
    mark("Not updating: the dashboard does not answer; still trying.");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) {
      clear();
    }
  });
})();
