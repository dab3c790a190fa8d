#!/usr/bin/env python3
"""scratchattach's own cloud-log code run against our /logs, for tests/scratchattach.rs.

Usage: requester.py <http-base> <project-id> <frames>, where <frames> is a JSON list of the
texts of set frames a watching client received over the WebSocket. Prints one JSON line (or {"skip": reason} when scratchattach is not installed):
  {"activities": [...],  the log as scratchattach's CloudActivity objects, newest first
   "requesters": [...],  for each set in the frames, who scratchattach says sent it
   "get_var": {...}}     scratchattach's ScratchCloud.get_var(name, use_logs=True) per name

Nothing of the library is reimplemented except two things it cannot be told:
- where the log is: ScratchCloud.logs() always asks https://clouddata.scratch.mit.edu/logs.
  A transport adapter mounted on scratchattach's own HTTP session (utils.requests.requests)
  sends those requests to our server instead; the library builds the URL, checks the answer
  and parses it (commons.parse_object_list -> CloudActivity._update_from_dict) itself.
- the WebSocket: a CloudActivity for a received set is built exactly as CloudEvents._updater
  builds it (timestamp = receipt time in ms, cloud = the cloud, name without its prefix), from
  the frames our server really sent. The requester is then found by CloudRequests.get_requester,
  the function a cloud-request handler calls, which looks the value up in the log
  (CloudActivity.load_log_data -> cloud.logs(filter_by_var_named=...)).
"""
import json
import sys
import threading
import time
import warnings
from types import SimpleNamespace
from urllib.parse import urlsplit


def main():
    base, project, frames = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        import requests
        from scratchattach.cloud.cloud import ScratchCloud
        from scratchattach.eventhandlers.cloud_requests import CloudRequests, ReceivedRequest
        from scratchattach.site import cloud_activity
        from scratchattach.utils import requests as sa_requests
    except ImportError as e:
        print(json.dumps({"skip": f"scratchattach not installed (pip install scratchattach): {e}"}),
              flush=True)
        return
    warnings.simplefilter("ignore")

    class ToOurServer(requests.adapters.HTTPAdapter):
        """Sends scratchattach's requests for Scratch's log to the server under test."""

        def send(self, request, **kwargs):
            parts = urlsplit(request.url)
            request.url = base + parts.path + ("?" + parts.query if parts.query else "")
            return super().send(request, **kwargs)

    sa_requests.requests.mount("https://clouddata.scratch.mit.edu/", ToOurServer())

    cloud = ScratchCloud(project_id=project)
    activities = cloud.logs(limit=100)

    requesters = []
    names = []
    for frame in frames:
        for line in frame.splitlines():
            data = json.loads(line)
            # As CloudEvents._updater does for each packet of its event stream:
            activity = cloud_activity.CloudActivity(
                timestamp=time.time() * 1000, _session=None, cloud=cloud)
            data["variable_name"] = data["name"]
            data["name"] = data["variable_name"].replace("☁ ", "")
            activity._update_from_dict(data)
            names.append(activity.name)
            # As a request handler does: CloudRequests.get_requester with the request being
            # answered registered under the current thread's name (Request.__call__ does that).
            handler = SimpleNamespace(executed_requests={
                threading.current_thread().name: ReceivedRequest(activity=activity)})
            requesters.append(CloudRequests.get_requester(handler))

    print(json.dumps({
        "activities": [{"type": a.type, "name": a.name, "var": a.var, "value": a.value,
                        "user": a.user, "username": a.username, "timestamp": a.timestamp,
                        "timestamp_is_int": isinstance(a.timestamp, int)} for a in activities],
        "requesters": requesters,
        "get_var": {n: cloud.get_var(n, use_logs=True) for n in names},
    }), flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # reported to the test, which fails with it
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
