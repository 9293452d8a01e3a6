"""Helpers the browser tests share: polling with a deadline, and kubectl."""
import subprocess
import time


def eventually(what, f, timeout=20.0, errors=(Exception,)):
    """Poll `f` until it is truthy (its value) or the deadline passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = f()
            if v:
                return v
        except errors as e:  # a page between states
            last = e
        time.sleep(0.05)
    raise AssertionError(f"{what} (last error: {last})")


def kubectl(*args):
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl {args}: {out.stderr}"
    return out.stdout
