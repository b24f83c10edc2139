"""Look at a task the way an annotator does: headless Debian Chromium driven by Playwright.

Playwright's own browser download cannot run here, so this drives the distribution's
``/usr/bin/chromium`` (``scripts/system-deps.sh`` installs it). Selectors are those of
Label Studio 1.23's editor: ``.lsf-outliner-item`` is one entry of the Regions panel.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REGION_ENTRY = ".lsf-outliner-item"
# Settings > Annotation: the model-version picker's button (its value in data-value) and the
# entries of its unfolded list
MODEL_PICKER = "button[data-name=model_version]"
PICKER_OPTION = "[role=option]"
# With Auto-Annotation on, the toolbar's smart tools (folded behind one button)
SMART_TOOLS = ".lsf-tool_smart"
# The editor's <img> is replaced by a blob: URL once fetched; any decoded image will do.
_IMAGE_SHOWN = """() => [...document.querySelectorAll('.lsf-main-view img')]
    .some(img => img.complete && img.naturalWidth > 0)"""
_ENTRIES_AT_LEAST = "n => document.querySelectorAll('.lsf-outliner-item').length >= n"


class BrowserError(RuntimeError):
    """The browser could not log in or did not show the labeling editor."""


def find_chromium() -> Path | None:
    """Path of the system Chromium, or None when it is not installed."""
    if CHROMIUM.is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


@contextmanager
def _page(chromium: Path, timeout_s: float, screenshot: Path) -> Iterator[Any]:
    """A page of a fresh headless Chromium, closed afterwards; `screenshot`'s folder made."""
    # Imported here so the e2e tests that need no browser still run without Playwright.
    from playwright.sync_api import sync_playwright

    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(timeout_s * 1000)
            yield page
        finally:
            browser.close()


def _log_in(page: Any, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/user/login/")
    page.fill("input[name=email]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url)
    logger.debug("Logged into %s as %s", base_url, username)


def _open_task(
    page: Any, base_url: str, username: str, password: str, project: int, task: int
) -> None:
    """Log into Label Studio and open a task in the labeling editor, its image decoded."""
    _log_in(page, base_url, username, password)
    page.goto(f"{base_url}/projects/{project}/data?task={task}")
    page.wait_for_function(_IMAGE_SHOWN)


def count_task_regions(
    base_url: str,
    username: str,
    password: str,
    project_id: int,
    task_id: int,
    screenshot: Path,
    *,
    expected_regions: int | None = None,
    chromium: Path = CHROMIUM,
    timeout_s: float = 60.0,
) -> int:
    """Log in, open a task in the labeling editor and count the entries of its Regions panel.

    Waits until the task's image is decoded and, when ``expected_regions`` is given, until at
    least that many entries are listed (LS adds prediction regions a moment after the image).
    A full-page screenshot is written to ``screenshot`` in every case, failures included, so a
    failed run leaves something to look at.
    """
    from playwright.sync_api import Error as PlaywrightError

    with _page(chromium, timeout_s, screenshot) as page:
        try:
            _open_task(page, base_url, username, password, project_id, task_id)
            page.wait_for_selector(".lsf-outliner")
            if expected_regions:
                page.wait_for_function(_ENTRIES_AT_LEAST, arg=expected_regions)
            count = page.locator(REGION_ENTRY).count()
        except PlaywrightError as error:
            raise BrowserError(
                f"task {task_id} of project {project_id} did not show in the editor at "
                f"{page.url} (screenshot {screenshot}): {error.message.splitlines()[0]}"
            ) from error
        finally:
            try:
                page.screenshot(path=str(screenshot), full_page=True)
            except PlaywrightError as error:
                logger.warning("No screenshot of task %d: %s", task_id, error.message)
    logger.info("Task %d shows %d region entries; screenshot %s", task_id, count, screenshot)
    return int(count)


def screenshot_page(
    url: str,
    screenshot: Path,
    *,
    wait_for: str,
    chromium: Path = CHROMIUM,
    timeout_s: float = 60.0,
) -> str:
    """Open `url`, wait for the selector `wait_for`, save a full-page screenshot and return
    the page's visible text."""
    with _page(chromium, timeout_s, screenshot) as page:
        page.goto(url)
        page.wait_for_selector(wait_for)
        page.screenshot(path=str(screenshot), full_page=True)
        return str(page.inner_text("body"))


def submit_task_unchanged(
    base_url: str,
    username: str,
    password: str,
    project_id: int,
    task_id: int,
    regions: int,
    screenshot: Path,
    *,
    chromium: Path = CHROMIUM,
    timeout_s: float = 60.0,
) -> None:
    """Log in, open a task whose prediction shows `regions` boxes, and press Submit without
    touching anything: the annotation an annotator who accepts every box creates (the
    screenshot shows the editor just before)."""
    with _page(chromium, timeout_s, screenshot) as page:
        _open_task(page, base_url, username, password, project_id, task_id)
        page.wait_for_function(_ENTRIES_AT_LEAST, arg=regions)
        page.wait_for_timeout(1500)  # a moment "spent" on the task: a lead_time above 0
        page.screenshot(path=str(screenshot), full_page=True)
        with page.expect_response(
            lambda answer: (
                f"/api/tasks/{task_id}/annotations" in answer.url
                and answer.request.method == "POST"
            )
        ) as posted:
            page.get_by_role("button", name="Submit").first.click()
        if posted.value.status != 201:
            raise BrowserError(f"Submit answered HTTP {posted.value.status}")


def model_version_picker(
    base_url: str,
    username: str,
    password: str,
    project_id: int,
    screenshot: Path,
    *,
    chromium: Path = CHROMIUM,
    timeout_s: float = 60.0,
) -> tuple[str, list[str]]:
    """Log in, open the project's Settings > Annotation and unfold its model-version picker
    ("Select which predictions or which model you want to use"): returns the selected value
    (the project's `model_version`) and the options' labels, as shown; the screenshot shows
    the unfolded list."""
    with _page(chromium, timeout_s, screenshot) as page:
        _log_in(page, base_url, username, password)
        page.goto(f"{base_url}/projects/{project_id}/settings/annotation")
        trigger = page.locator(MODEL_PICKER)
        trigger.wait_for()
        selected = str(trigger.get_attribute("data-value"))
        trigger.click()
        page.wait_for_selector(PICKER_OPTION)
        options = [text.strip() for text in page.locator(PICKER_OPTION).all_inner_texts()]
        page.screenshot(path=str(screenshot), full_page=True)
    logger.info(
        "Project %d picks %s among %s; screenshot %s", project_id, selected, options, screenshot
    )
    return selected, options


def draw_smart_rectangle(
    base_url: str,
    username: str,
    password: str,
    project_id: int,
    task_id: int,
    corners: tuple[float, float, float, float],
    image_width: int,
    label: str,
    screenshot: Path,
    *,
    chromium: Path = CHROMIUM,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Log in, open a task, turn Auto-Annotation on, pick the smart rectangle tool and
    `label`, and drag a rectangle over `corners` (x1, y1, x2, y2 in image pixels): Label
    Studio then asks the interactive backend. Returns that answer (`interactive-annotating`)
    once the editor lists its suggestion; the screenshot shows the editor then."""
    with _page(chromium, timeout_s, screenshot) as page:
        _open_task(page, base_url, username, password, project_id, task_id)
        page.get_by_text("Auto-Annotation").click()
        page.locator(f"{SMART_TOOLS}:not([aria-label])").first.click()  # unfold them
        page.locator(f"{SMART_TOOLS}[aria-label=rectangle-tool]").click()
        page.get_by_text(label, exact=True).first.click()
        image = page.locator(".lsf-main-view img").first.bounding_box()
        scale = image["width"] / image_width
        x1, y1, x2, y2 = (
            image["x" if i % 2 == 0 else "y"] + v * scale for i, v in enumerate(corners)
        )
        with page.expect_response(lambda answer: "interactive-annotating" in answer.url) as asked:
            page.mouse.move(x1, y1)
            page.mouse.down()
            page.mouse.move((x1 + x2) / 2, (y1 + y2) / 2, steps=5)
            page.mouse.move(x2, y2, steps=5)
            page.mouse.up()
        page.wait_for_function(_ENTRIES_AT_LEAST, arg=1)
        page.screenshot(path=str(screenshot), full_page=True)
        return dict(asked.value.json())
