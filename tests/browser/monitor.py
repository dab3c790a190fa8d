#!/usr/bin/env python3
"""Drives /cloudmonitor/<id> in headless Chromium for tests/browser.rs.

Usage: monitor.py <page-url>. Speaks JSON lines: prints {"ready": ...} once the page has
answered its first poll (or {"skip": reason} when selenium, chromium or chromedriver is missing,
and exits), then for each request read on stdin,
  {"expect": {"name": N, "value": V, "user": U}}
waits (with patience) until the variables table shows N = V by U and the history shows U set N
to V, and prints what it saw: {"variable": bool, "history": bool, "img_elements": n,
"unexpected_elements": [...], "alerts": [...], "status": text}. The caller asserts.

Before the page's own script runs, a hook (injected over the DevTools protocol, so the page's
CSP does not apply to it) records every alert/confirm/prompt call and every element added to
the tables that the page itself never creates there (an <img> from a value parsed as HTML
would be one).
"""
import json
import os
import shutil
import sys
import tempfile
import time

PATIENCE_S = 10

HOOK = """
window.__alerts = [];
for (const f of ["alert", "confirm", "prompt"]) {
  window[f] = function (m) { window.__alerts.push(f + ":" + String(m)); };
}
window.__unexpected = [];
const allowed = new Set(["TBODY", "TR", "TD", "TIME"]);
new MutationObserver(function (records) {
  for (const r of records) for (const n of r.addedNodes) {
    if (n.nodeType !== 1) continue;
    if (!(n.closest && n.closest("tbody"))) continue;
    const all = [n, ...n.querySelectorAll("*")];
    for (const e of all) if (!allowed.has(e.tagName)) window.__unexpected.push(e.tagName);
  }
}).observe(document, {childList: true, subtree: true});
"""

# Reads the page the way a user sees it: the text of each row of both tables.
SNAPSHOT = """
const status = document.getElementById("status");
if (!status) return {vars: [], log: [], imgs: 0, unexpected: [], alerts: window.__alerts,
                     status: "not the monitor page: " + document.body.textContent.slice(0, 200)};
const rows = id => [...document.querySelectorAll("#" + id + " tbody tr")]
  .map(tr => [...tr.cells].map(td => td.textContent));
return {vars: rows("vars"), log: rows("log"),
        status: status.textContent,
        imgs: document.getElementsByTagName("img").length,
        unexpected: window.__unexpected,
        alerts: window.__alerts};
"""


def say(obj):
    print(json.dumps(obj), flush=True)


def start_browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "python module selenium not installed (pip install selenium)"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        return None, "chromium or chromedriver not found (apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--user-data-dir=" + tempfile.mkdtemp(prefix="stratus-chromium-")):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options), None


def main():
    url = sys.argv[1]
    driver, why = start_browser()
    if driver is None:
        say({"skip": why})
        return
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK})
        driver.get(url)
        deadline = time.monotonic() + PATIENCE_S
        snap = driver.execute_script(SNAPSHOT)
        while not snap["status"].startswith("Live") and time.monotonic() < deadline:
            time.sleep(0.05)
            snap = driver.execute_script(SNAPSHOT)
        say({"ready": snap["status"].startswith("Live"), "status": snap["status"]})
        for line in sys.stdin:
            want = json.loads(line)["expect"]
            var_row = [want["name"], want["value"], want["user"]]
            log_row = [want["user"], want.get("action", "set"), want["name"], want["value"]]
            deadline = time.monotonic() + PATIENCE_S
            while True:
                snap = driver.execute_script(SNAPSHOT)
                in_vars = any(r[:3] == var_row for r in snap["vars"])
                in_log = any(r[:4] == log_row for r in snap["log"])
                if (in_vars and in_log) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            say({"variable": in_vars, "history": in_log, "img_elements": snap["imgs"],
                 "unexpected_elements": snap["unexpected"], "alerts": snap["alerts"],
                 "status": snap["status"], "seen": {"vars": snap["vars"], "log": snap["log"][:5]}})
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
