"""Open an HTML page in headless Chromium and collect its errors and a screenshot.

The checker drives Chromium through the DevTools protocol over
``--remote-debugging-pipe``: Chromium reads commands from file descriptor 3 and
writes replies and events to file descriptor 4, each message JSON ending in a
NUL byte. Only the standard library is needed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

CHROMIUM_NAMES = (
    "chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
)

# Chromium does not start as root unless its sandbox is disabled, and the
# tests may run as root.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--mute-audio",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-pipe",
)

# Lists the images that did not load: complete with a natural width means the
# browser decoded the image.
IMAGE_CHECK = """
Array.from(document.images)
  .filter((image) => !(image.complete && image.naturalWidth > 0))
  .map((image) => image.alt || image.src.slice(0, 80))
"""


class RenderError(RuntimeError):
    """Chromium failed to start, crashed or rejected a command."""


@dataclass
class RenderResult:
    """What one page load in Chromium produced."""

    errors: list[str] = field(default_factory=list)
    """Console errors, uncaught exceptions and failed resource loads."""
    image_count: int = 0
    broken_images: list[str] = field(default_factory=list)
    """Alt text (else the start of the source) of each image that did not load."""
    values: list[Any] = field(default_factory=list)
    """The value of each expression passed in ``evaluate``, in order."""
    screenshot: bytes = b""
    """Full-page PNG taken after the expressions ran."""


def find_chromium() -> str | None:
    """Return the path of the first Chromium or Chrome binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevToolsPipe:
    """A headless Chromium process and the DevTools messages exchanged with it."""

    def __init__(self, chromium: str, profile: Path, log: Path, width: int) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        self._log = log
        self._buffer = bytearray()
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        args = [
            chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--window-size={width},1024", "about:blank",
        ]
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # A new session makes Chromium's helper processes one process group,
            # so that close() can end all of them if the browser hangs.
            self.pid = os.posix_spawn(
                chromium, args, os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, commands_read, 3),
                    (os.POSIX_SPAWN_DUP2, replies_write, 4),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                ],
                setsid=True,
            )
        except OSError:
            os.close(self._commands)
            os.close(self._replies)
            raise
        finally:
            os.close(log_fd)
            os.close(commands_read)
            os.close(replies_write)

    def call(
        self, method: str, params: dict | None, session: str | None, deadline: float
    ) -> dict[str, Any]:
        """Send one command and return its result, storing events that arrive first."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method}
        message["params"] = params or {}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(deadline)
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RenderError(f"Chromium rejected {method}: {reply['error']}")
            return reply["result"]

    def wait_for_event(self, method: str, start: int, deadline: float) -> None:
        """Wait for event ``method`` at or after index ``start`` of ``events``."""
        while not any(e.get("method") == method for e in self.events[start:]):
            self.events.append(self._receive(deadline))

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._replies], [], [], max(remaining, 0))
            if not ready:
                raise TimeoutError("Chromium did not reply in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RenderError(f"Chromium exited: {self._log_tail()}")
            self._buffer += chunk
        end = self._buffer.index(b"\0")
        message = json.loads(self._buffer[:end])
        del self._buffer[: end + 1]
        return message

    def _log_tail(self) -> str:
        lines = self._log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "no output"

    def close(self) -> None:
        """Close the browser, and kill its process group if it still runs after 5 s."""
        command = json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0"
        try:
            os.write(self._commands, command)
        except OSError:
            pass  # The browser has already exited and closed its end.
        os.close(self._commands)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG) != (0, 0):
                break
            time.sleep(0.05)
        else:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self._replies)


def _event_error(event: dict[str, Any]) -> str | None:
    """Describe a console error, uncaught exception, failed load or crash, else None."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
        return "console error: " + " ".join(texts)
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        description = details.get("exception", {}).get("description", details["text"])
        return f"uncaught exception at line {details['lineNumber'] + 1}: {description}"
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        entry = params["entry"]
        where = entry.get("url", "")
        return f"{entry['source']} error: {entry['text']} {where}".strip()
    if method == "Inspector.targetCrashed":
        return "the page crashed"
    return None


def _evaluate(
    pipe: DevToolsPipe, session: str, expression: str, deadline: float
) -> tuple[Any, str | None]:
    """Return the value of ``expression`` in the page, and an error text if it threw."""
    reply = pipe.call(
        "Runtime.evaluate",
        {"expression": expression, "returnByValue": True, "awaitPromise": True},
        session, deadline,
    )
    if "exceptionDetails" in reply:
        details = reply["exceptionDetails"]
        description = details.get("exception", {}).get("description", details["text"])
        return None, f"evaluating {expression.strip()[:60]!r} raised: {description}"
    return reply["result"].get("value"), None


def _screenshot(pipe: DevToolsPipe, session: str, deadline: float) -> bytes:
    """Capture the whole page, beyond the window, as PNG bytes."""
    size = pipe.call("Page.getLayoutMetrics", None, session, deadline)["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
    clip["scale"] = 1
    params = {"format": "png", "captureBeyondViewport": True, "clip": clip}
    data = pipe.call("Page.captureScreenshot", params, session, deadline)["data"]
    return base64.b64decode(data)


def render_page(
    page: Path,
    *,
    evaluate: Sequence[str] = (),
    timeout: float = 60.0,
    chromium: str | None = None,
    width: int = 1280,
) -> RenderResult:
    """Load ``page`` in headless Chromium, run ``evaluate`` and take a screenshot.

    Errors are collected from the start of the load until the screenshot, so
    they include those raised by the evaluated expressions (for example a
    scripted click). Raises TimeoutError when the whole check takes longer than
    ``timeout`` seconds, and RenderError when Chromium fails.
    """
    page = Path(page).resolve()
    if not page.is_file():
        raise ValueError(f"page {page} not found: pass the path of an HTML file")
    if timeout <= 0:
        raise ValueError(f"invalid timeout {timeout}: pass a number of seconds above 0")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RenderError("Chromium not found on PATH: run scripts/ensure-chromium.sh")
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="groklab-chromium-") as folder:
        folder = Path(folder)
        pipe = DevToolsPipe(chromium, folder / "profile", folder / "log", width)
        try:
            return _check_page(pipe, page, evaluate, deadline)
        except TimeoutError:
            raise TimeoutError(
                f"Chromium did not finish checking {page} within {timeout} s: look for "
                "a script that never ends or raise the timeout"
            ) from None
        finally:
            pipe.close()


def _check_page(
    pipe: DevToolsPipe, page: Path, evaluate: Sequence[str], deadline: float
) -> RenderResult:
    target = pipe.call("Target.createTarget", {"url": "about:blank"}, None, deadline)
    session = pipe.call(
        "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
        None, deadline,
    )["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Inspector"):
        pipe.call(f"{domain}.enable", None, session, deadline)
    start = len(pipe.events)
    navigation = pipe.call("Page.navigate", {"url": page.as_uri()}, session, deadline)
    if "errorText" in navigation:
        raise RenderError(f"Chromium failed to open {page}: {navigation['errorText']}")
    pipe.wait_for_event("Page.loadEventFired", start, deadline)

    result = RenderResult()
    result.image_count = _evaluate(pipe, session, "document.images.length", deadline)[0]
    result.broken_images = _evaluate(pipe, session, IMAGE_CHECK, deadline)[0]
    evaluation_errors = []
    for expression in evaluate:
        value, error = _evaluate(pipe, session, expression, deadline)
        result.values.append(value)
        if error:
            evaluation_errors.append(error)
    result.screenshot = _screenshot(pipe, session, deadline)
    event_errors = [_event_error(event) for event in pipe.events]
    result.errors = [error for error in event_errors if error] + evaluation_errors
    return result
