#!/usr/bin/env python3
"""Drives the admin console (/admin) in headless Chromium for tests/admin_console.rs.

Usage: admin.py (no arguments). Speaks JSON lines: starts the browser and prints {"ready": true}
(or {"skip": reason} when selenium, chromium or chromedriver is missing, and exits) before the
test starts its server, then answers one line per request read on stdin:
  {"login": {"url": U, "token": T}}  loads U, signs in with T; answers {"signed_in": bool,
      "status": text, "cookie": document.cookie, "browser_cookies": [...], "href": location.href,
      "local_storage": [values]}
  {"expect_room": R}   waits until the rooms table lists R; {"room": bool, "rooms": [ids]}
      and the cookie/href/local_storage fields of "login"
  {"open": R}          opens room R; {"opened": bool, "status": text}
  {"set": {"name": N, "value": V}}  sets N to V with the page's form (V typed as a user would);
      {"done": bool, "status": text}
  {"expect": {"name": N, "value": V, "user": U}}  waits until the room's variables show N = V
      by U and its history shows U changing N to V; {"variable": bool, "history": bool,
      "img_elements": n, "unexpected_elements": [...], "alerts": [...], "status": text}
Each wait has its own patience; the caller asserts.

Before the page's own script runs, a hook (injected over the DevTools protocol, so the page's
CSP does not apply to it) records every alert/confirm/prompt call and every element added to
a table body that the page itself never creates there (an <img> from a value parsed as HTML
would be one).
"""
import json
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
const allowed = new Set(["TBODY", "TR", "TD", "TIME", "BUTTON"]);
new MutationObserver(function (records) {
  for (const r of records) for (const n of r.addedNodes) {
    if (n.nodeType !== 1) continue;
    if (!(n.closest && n.closest("tbody"))) continue;
    const all = [n, ...n.querySelectorAll("*")];
    for (const e of all) if (!allowed.has(e.tagName)) window.__unexpected.push(e.tagName);
  }
}).observe(document, {childList: true, subtree: true});
"""

# The page the way a user sees it: the status line and the text of each table's rows.
SNAPSHOT = """
const $ = id => document.getElementById(id);
if (!$("status") || !$("rooms")) return {missing: true, status: "not the admin console: " +
  document.body.textContent.slice(0, 200), alerts: window.__alerts || []};
const rows = id => [...document.querySelectorAll("#" + id + " tbody tr:not(.empty)")]
  .map(tr => [...tr.cells].map(td => td.textContent));
return {status: $("status").textContent, bad: $("status").className === "bad",
        console: !$("console").hidden, room: $("room").hidden ? null : $("room-id").textContent,
        room_info: $("room-info").textContent,
        rooms: rows("rooms"), vars: rows("vars"), log: rows("log"),
        imgs: document.getElementsByTagName("img").length,
        unexpected: window.__unexpected, alerts: window.__alerts};
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


def wait_for(driver, done):
    """Snapshots until `done(snap)` or the patience runs out; returns (met, last snapshot)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        snap = driver.execute_script(SNAPSHOT)
        if (not snap.get("missing") and done(snap)) or time.monotonic() > deadline:
            return not snap.get("missing") and done(snap), snap
        time.sleep(0.05)


def login(driver, url, token):
    driver.get(url)
    wait_for(driver, lambda s: True)
    field = driver.execute_script("return document.getElementById('token')")
    if field is None:
        return {"signed_in": False, "status": driver.execute_script(SNAPSHOT)["status"]}
    field.send_keys(token)
    driver.execute_script("document.getElementById('login').requestSubmit()")
    ok, snap = wait_for(driver, lambda s: s["console"] or s["bad"])
    return dict(stored(driver), signed_in=ok and snap["console"], status=snap["status"])


def stored(driver):
    """Where the page could have left the token for later: cookies, address, localStorage."""
    return {"cookie": driver.execute_script("return document.cookie"),
            "browser_cookies": [c.get("value", "") for c in driver.get_cookies()],
            "href": driver.execute_script("return location.href"),
            "local_storage": driver.execute_script(
                "return Object.keys(localStorage).map(k => k + '=' + localStorage.getItem(k))")}


def open_room(driver, room):
    buttons = driver.execute_script(
        "return [...document.querySelectorAll('#rooms tbody button')]"
        ".filter(b => b.textContent === arguments[0])", room)
    if not buttons:
        return {"opened": False, "status": "no button for room " + room}
    buttons[0].click()
    ok, snap = wait_for(driver, lambda s: s["room"] == room and s["room_info"] != "Loading…")
    return {"opened": ok, "status": snap["status"], "room_info": snap["room_info"]}


def set_variable(driver, name, value):
    for field, text in (("set-name", name), ("set-value", value)):
        element = driver.execute_script("return document.getElementById(arguments[0])", field)
        element.clear()
        element.send_keys(text)
    driver.execute_script("document.getElementById('set-form').requestSubmit()")
    ok, snap = wait_for(driver, lambda s: s["status"].startswith("Done") or s["bad"])
    return {"done": ok and snap["status"].startswith("Done"), "status": snap["status"]}


def expect(driver, want):
    var_row = [want["name"], want["value"], want["user"]]
    ok, snap = wait_for(driver, lambda s: any(r[:3] == var_row for r in s["vars"]) and any(
        r[0] == want["user"] and r[2:4] == [want["name"], want["value"]] for r in s["log"]))
    in_vars = any(r[:3] == var_row for r in snap.get("vars", []))
    in_log = any(r[0] == want["user"] and r[2:4] == [want["name"], want["value"]]
                 for r in snap.get("log", []))
    return {"variable": in_vars, "history": in_log, "img_elements": snap.get("imgs"),
            "unexpected_elements": snap.get("unexpected"), "alerts": snap.get("alerts"),
            "status": snap["status"], "seen": {"vars": snap.get("vars"), "log": snap.get("log", [])[:5]}}


def answer(driver, req):
    if "login" in req:
        return login(driver, req["login"]["url"], req["login"]["token"])
    if "expect_room" in req:
        ok, snap = wait_for(driver, lambda s: any(r[0] == req["expect_room"] for r in s["rooms"]))
        return dict(stored(driver), room=ok, rooms=[r[0] for r in snap.get("rooms", [])],
                    status=snap["status"])
    if "open" in req:
        return open_room(driver, req["open"])
    if "set" in req:
        return set_variable(driver, req["set"]["name"], req["set"]["value"])
    if "expect" in req:
        return expect(driver, req["expect"])
    return {"error": "unknown request"}


def main():
    driver, why = start_browser()
    if driver is None:
        say({"skip": why})
        return
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK})
        say({"ready": True})
        for line in sys.stdin:
            req = json.loads(line)
            try:
                say(answer(driver, req))
            except Exception as e:  # an answer the caller can show, not a silent hang
                say({"error": type(e).__name__ + ": " + str(e)[:500], "request": req})
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
