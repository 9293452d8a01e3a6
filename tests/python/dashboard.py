"""The dashboard in Debian's Chromium, headless, driven by Selenium (tests/dashboard.rs runs it).

Environment: DASHBOARD_URL (https://…/ui/), CHROME_BIN and CHROMEDRIVER, ADMIN_LINK (a `wasmorch dashboard` link),
VIEW_TOKEN (a token RBAC lets only view), KUBECONFIG (for kubectl), MANIFEST (a Deployment
to apply), SHOTS (a directory for screenshots). Exit 0 when every step held; otherwise the
failing step's assertion.
"""
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from waits import eventually, kubectl

URL = os.environ["DASHBOARD_URL"]
SHOTS = os.environ["SHOTS"]


def browser():
    opts = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--ignore-certificate-errors",
              "--window-size=1400,1000", "--disable-gpu", "--no-first-run"]:
        opts.add_argument(a)
    opts.binary_location = os.environ.get("CHROME_BIN", "/usr/bin/chromium")
    return webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)


def text(d):
    return d.find_element(By.TAG_NAME, "main").text


def click(d, selector):
    """Click the element `selector` names, again if a live re-render replaced it meanwhile."""
    def once():
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True
    eventually(f"clicking {selector}", once)


def shot(d, name):
    path = os.path.join(SHOTS, f"{name}.png")
    d.save_screenshot(path)
    assert os.path.getsize(path) > 5000, f"{path} is empty"


def accept(d):
    def alert():
        try:
            return d.switch_to.alert
        except NoAlertPresentException:
            return None
    eventually("a confirmation", alert).accept()


def sign_in_again(d, token):
    """Sign out, then in with `token` on the form."""
    d.find_element(By.ID, "signout").click()
    eventually("the sign-in form", lambda: d.find_elements(By.ID, "token"))
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()


def main():
    d = browser()
    try:
        # Sign in with the link `wasmorch dashboard` printed: the overview lists the nodes.
        started = time.monotonic()
        d.get(os.environ["ADMIN_LINK"])
        eventually("the overview lists the node", lambda: "Ready" in text(d) and "Nodes" in text(d))
        print(f"page load to nodes listed: {1000 * (time.monotonic() - started):.0f} ms", file=sys.stderr)
        assert "#token" not in d.current_url, "the token stays in the address bar"
        shot(d, "overview")

        # A Deployment applied with kubectl appears, its pods turning Running (no reload).
        d.get(URL + "#/workloads")
        kubectl("apply", "-f", os.environ["MANIFEST"])
        applied = time.monotonic()
        eventually("the deployment appears", lambda: "web" in text(d) and "Pods of deployment web" in text(d))
        print(f"kubectl apply to shown: {1000 * (time.monotonic() - applied):.0f} ms", file=sys.stderr)
        eventually("its pods turn Running", lambda: text(d).count("Running") >= 2, timeout=60)
        shot(d, "workloads")

        # Scaling in the page changes spec.replicas.
        box = d.find_element(By.CSS_SELECTOR, "input[aria-label='Replicas of web']")
        box.clear()
        box.send_keys("3")
        click(d, "button[aria-label='Scale web']")
        accept(d)
        eventually("spec.replicas becomes 3",
                   lambda: json.loads(kubectl("get", "deployment", "web", "-o", "json"))["spec"]["replicas"] == 3)
        eventually("three pods shown Running", lambda: text(d).count("Running") >= 3, timeout=60)

        # Restart makes a new revision; rolling back returns to the first one's template.
        def deployment():
            return json.loads(kubectl("get", "deployment", "web", "-o", "json"))

        click(d, "button[aria-label='Restart web']")
        accept(d)
        eventually("the restart's revision", lambda: "kubectl.kubernetes.io/restartedAt"
                   in (deployment()["spec"]["template"]["metadata"].get("annotations") or {}))
        eventually("revision 2", lambda: deployment()["metadata"]["annotations"].get("deployment.kubernetes.io/revision") == "2")
        click(d, "button[aria-label='Roll back web']")
        accept(d)
        eventually("the first revision's template", lambda: "kubectl.kubernetes.io/restartedAt"
                   not in (deployment()["spec"]["template"]["metadata"].get("annotations") or {}))
        kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        eventually("three pods Running again", lambda: text(d).count("Running") >= 3, timeout=60)

        # A pod's logs show its output (hello-http logs each request it answers).
        pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]
        first = next(p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))
        pod = first["metadata"]["name"]
        urllib.request.urlopen(f"http://{first['status']['podIP']}:8080/from-the-dashboard-test", timeout=10).read()
        d.get(URL + "#/pods")
        eventually("the pod list", lambda: pod in text(d))
        shot(d, "pods")
        def open_logs():
            d.find_element(By.LINK_TEXT, pod).click()
            return True
        eventually("opening the pod's logs", open_logs)
        eventually("the pod's logs",
                   lambda: "/from-the-dashboard-test" in d.find_element(By.CSS_SELECTOR, "pre.logs").text, timeout=30)
        shot(d, "logs")

        # Events, newest first, filtered.
        d.get(URL + "#/events")
        eventually("events", lambda: "Scheduled" in text(d))
        box = d.find_element(By.ID, "event-filter")
        box.send_keys("ScalingReplicaSet")
        try:
            eventually("the filter keeps only matching events",
                       lambda: "Scheduled" not in text(d) and "ScalingReplicaSet" in text(d))
        except AssertionError:
            print(d.find_element(By.ID, "event-filter").get_attribute("value"), text(d)[:1500], file=sys.stderr)
            raise
        shot(d, "events")
        d.get(URL + "#/services")
        eventually("services", lambda: "kubernetes" in text(d))
        shot(d, "services")

        # Namespaces, and usage charts once the metrics API has measured the pods.
        d.get(URL + "#/namespaces")
        eventually("the namespaces", lambda: "kube-system" in text(d) and "default" in text(d))
        d.get(URL + "#/pods")
        eventually("usage charts", lambda: d.find_elements(By.CSS_SELECTOR, f"svg[aria-label^='CPU used by {pod}']"), timeout=30)
        d.get(URL + "#/overview")
        eventually("node usage charts", lambda: d.find_elements(By.CSS_SELECTOR, "svg[aria-label^='Memory used by']"), timeout=30)
        shot(d, "overview")

        # Sign out, then in as a viewer: an action it may not take shows the refusal.
        sign_in_again(d, os.environ["VIEW_TOKEN"])
        d.get(URL + "#/workloads")
        eventually("the viewer sees the deployment", lambda: "Pods of deployment web" in text(d))
        click(d, "button[aria-label='Restart web']")
        accept(d)
        toast = eventually("a refusal", lambda: d.find_element(By.ID, "toast").text)
        assert "Refused" in toast and "forbidden" in toast, toast
        shot(d, "refused")

        # One who may read only one namespace picks it: the lists follow it.
        sign_in_again(d, os.environ["TEAM_TOKEN"])
        d.get(URL + "#/pods")
        eventually("cluster-wide lists refused", lambda: "forbidden" in text(d))
        box = d.find_element(By.ID, "namespace")
        box.clear()
        box.send_keys("default")
        d.find_element(By.CSS_SELECTOR, "#namespace-picker button").click()
        eventually("the namespace's pods", lambda: pod in text(d) and "forbidden" not in text(d))

        # Phone-sized, dark: still readable (a screenshot to look at).
        d.set_window_size(390, 844)
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        d.get(URL + "#/overview")
        eventually("the overview on a phone", lambda: "Nodes" in text(d))
        bg = d.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert bg != "rgb(251, 251, 253)", f"the dark theme did not apply: {bg}"
        shot(d, "phone-dark")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
