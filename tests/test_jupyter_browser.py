"""One real-browser check: JupyterLab in headless Chromium on each machine, typing on one shows
on the other.

Debian's ``chromium`` (``apt-get install -y chromium``, see .ci/run) driven by Playwright for
Python through its executable path (no browser download). Each page may only reach its own
Jupyter server on 127.0.0.1: every other request (JupyterLab's news, fonts...) is refused.
The screenshot of B's JupyterLab is saved in ``$P2PRTC_TEST_ARTIFACTS`` (default: the test's
temporary folder) and its path printed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import playwright.async_api as playwright_api
import pytest
from daemons import read_notebook
from environment import missing
from jupyter_servers import JupyterServer, two_machines, until

NOTEBOOK = "lists.ipynb"
CHROMIUM = "/usr/bin/chromium"
TYPED = "typed in Chromium on A"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")


def first_code_source(path: Path) -> str:
    cells = read_notebook(path)["cells"]
    return "".join(next(cell for cell in cells if cell["cell_type"] == "code")["source"])


async def open_lab(browser: Any, server: JupyterServer, path: str) -> Any:
    """A page with JupyterLab showing ``path``, the notebook's cells rendered."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})

    async def loopback_only(route: Any) -> None:
        request = route.request
        if urlsplit(request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", loopback_only)
    page = await context.new_page()
    await page.goto(f"{server.address.url}/lab/tree/{path}?token={server.token}")
    await page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
    return page


async def test_text_typed_in_jupyterlab_on_one_machine_shows_in_jupyterlab_on_the_other(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    artifacts = Path(os.environ.get("P2PRTC_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    with two_machines(tmp_path, notebooks_dir / NOTEBOOK) as m:
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
            try:
                page_a = await open_lab(browser, m.a, m.pair.a_file.name)
                page_b = await open_lab(browser, m.b, m.pair.b_file.name)
                editor_a = page_a.locator(".jp-Notebook .jp-CodeCell .cm-content").first
                await editor_a.click()
                await page_a.keyboard.press("Control+End")
                await page_a.keyboard.type(TYPED, delay=20)
                first_cell_b = page_b.locator(".jp-Notebook .jp-CodeCell").first
                await playwright_api.expect(first_cell_b).to_contain_text(TYPED, timeout=30_000)
                # The daemons wrote the files: no tab keeps its "unsaved changes" mark.
                for page in (page_a, page_b):
                    dirty_tabs = page.locator(".lm-TabBar-tab.jp-mod-dirty")
                    await playwright_api.expect(dirty_tabs).to_have_count(0, timeout=10_000)
                screenshot = artifacts / "jupyterlab-machine-b.png"
                await page_b.screenshot(path=str(screenshot))
                print(f"screenshot of B's JupyterLab: {screenshot}")
            finally:
                await browser.close()
        await until(
            lambda: TYPED in first_code_source(m.pair.b_file),
            what="B's file to hold the text typed in A's browser",
        )
        assert read_notebook(m.pair.a_file) == read_notebook(m.pair.b_file)
