"""The dashboard in Debian's Firefox ESR, headless, driven over Marionette (Firefox's own
remote protocol: no separate driver to download). Run by tests/dashboard.rs after the
Chromium test, against the same cluster.

Environment: DASHBOARD_URL, ADMIN_LINK, KUBECONFIG, SHOTS (as dashboard.py).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from marionette_driver.marionette import Alert, Marionette
from waits import eventually, kubectl

URL = os.environ["DASHBOARD_URL"]


def main():
    profile = tempfile.mkdtemp()
    port = 2900 + os.getpid() % 1000
    with open(os.path.join(profile, "user.js"), "w") as f:
        f.write(f'user_pref("marionette.port", {port});\n')
    ff = subprocess.Popen(["firefox-esr", "--headless", "--marionette", "--no-remote", "-profile", profile],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        m = Marionette(host="127.0.0.1", port=port)
        m.start_session({"acceptInsecureCerts": True})
        m.set_window_rect(width=1400, height=1000)
        text = lambda: m.execute_script("return document.querySelector('main').innerText")  # noqa: E731

        started = time.monotonic()
        m.navigate(os.environ["ADMIN_LINK"])
        eventually("the overview lists the node", lambda: "Ready" in text() and "Nodes" in text())
        print(f"firefox: page load to nodes listed: {1000 * (time.monotonic() - started):.0f} ms", file=sys.stderr)
        with open(os.path.join(os.environ["SHOTS"], "firefox-overview.png"), "wb") as f:
            f.write(m.screenshot(format="binary"))

        # Live: a change made with kubectl shows; scaling from the page reaches the API.
        m.navigate(URL + "#/workloads")
        eventually("the deployment", lambda: "Pods of deployment web" in text())
        kubectl("annotate", "deployment", "web", "firefox=seen", "--overwrite")
        kubectl("scale", "deployment", "web", "--replicas=2")
        eventually("kubectl's scale shows", lambda: "2/2" in text(), timeout=60)
        m.execute_script("""
            const box = document.querySelector("input[aria-label='Replicas of web']");
            box.value = "4";
            document.querySelector("button[aria-label='Scale web']").click();
        """)
        eventually("a confirmation", lambda: Alert(m).text)
        Alert(m).accept()
        eventually("spec.replicas becomes 4",
                   lambda: json.loads(kubectl("get", "deployment", "web", "-o", "json"))["spec"]["replicas"] == 4)

        # A pod's logs stream.
        kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]
        first = next(p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))
        m.navigate(URL + f"#/logs/default/{first['metadata']['name']}")
        urllib.request.urlopen(f"http://{first['status']['podIP']}:8080/from-firefox", timeout=10).read()
        eventually("the pod's logs", lambda: "/from-firefox" in m.execute_script(
            "return document.querySelector('pre.logs').textContent"), timeout=30)
        m.delete_session()
    finally:
        ff.terminate()
        ff.wait()


if __name__ == "__main__":
    main()
