"""The demo app of `wedsync dev` (issue 18), in real headless Chromium.

Two `wedsync api` processes with the demo on (``WEDSYNC_DEV_DEMO``, as `wedsync dev` runs
them) and a conflicts worker; two browser contexts (two members, couple and planner) on
``/demo/`` of the first. A chat message arrives in the other tab; presence shows both;
concurrent edits of one task converge in both tabs and in ``GET /state`` (and the conflict
is shown); the first process restarted while both tabs are open: both reconnect and show
what was sent through the second meanwhile, once each; an edit made offline
(``context.set_offline``) is stored once after reconnecting. The screenshot goes to
docs/demo.png with ``WEDSYNC_DEMO_SCREENSHOT=1`` (else to the test's tmp dir).

Chromium is Debian's ``chromium`` (Playwright for Python drives the system executable: its
own browser downloads are not reachable here); installed with apt-get when missing, and the
browser test is skipped only when it can be neither found nor installed. Outside dev the
demo and its token endpoint do not exist (404), and the SDK copy the page imports is what
the SDK's sources build to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from config.settings import Settings
from tests.kits.world import (
    FAST_SENDERS,
    STOP_WITHIN,
    World,
    connect,
    eventually,
    gateway_processes,
    recv_type,
    send,
    wait_ready,
    worker_process,
)
from wedsync.embedded.process import free_port

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "sdk" / "js"
SCREENSHOT = ROOT / "docs" / "demo.png"
BROWSERS = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    """Debian's chromium, installed now (apt-get) if missing and possible: else None."""
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            env=env,
            capture_output=True,
            timeout=600,
            check=True,
        )
    return next((f for n in BROWSERS if (f := shutil.which(n))), None)


async def test_outside_dev_there_is_no_demo_and_no_token_endpoint(settings: Settings) -> None:
    async with (
        gateway_processes(settings, 1, env={"WEDSYNC_DEV_DEMO": "false"}) as [(base, _)],
        httpx.AsyncClient(base_url=base) as c,
    ):
        token = await c.post("/api/dev/token", json={"user_id": "mallory"})
        page = await c.get("/demo/")
    assert token.status_code == 404 and page.status_code == 404


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not on PATH (builds the SDK)")
def test_the_demo_imports_what_the_sdk_builds_to() -> None:
    from sdk.demo_bundle import bundle, checked_in

    if not (JS / "node_modules" / "typescript" / "package.json").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=JS,
            check=True,
            capture_output=True,
            timeout=300,
        )
    subprocess.run(["npm", "run", "build", "--silent"], cwd=JS, check=True, timeout=300)
    assert checked_in() == bundle(), "stale demo SDK copy: run `python -m sdk.demo_bundle`"


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not on PATH (installs yjs)")
def test_the_demo_vendors_what_tests_yjs_installs() -> None:
    """app/demo/static/vendor and the page's import map are tests/yjs's yjs + y-websocket."""
    from sdk.demo_vendor import MODULES, PAGE, checked_in, page_with, resolve

    if not (MODULES / "y-websocket" / "package.json").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=MODULES.parent,
            check=True,
            capture_output=True,
            timeout=300,
        )
    files, imports = resolve()
    assert checked_in() == files, "stale demo yjs copy: run `python -m sdk.demo_vendor`"
    assert PAGE.read_text() == page_with(imports), "stale import map: `python -m sdk.demo_vendor`"


class Api:
    """One `wedsync api` process on a fixed port, restartable there (a gateway restart)."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **settings.to_env(),
            "WEDSYNC_PORT": str(self.port),
            "WEDSYNC_LOG_LEVEL": "WARNING",
            **FAST_SENDERS,
            **env,
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wedsync.cli", "api", env=self.env
        )
        async with httpx.AsyncClient() as c:
            await wait_ready(c, self.base)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_WITHIN)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


DEMO = {"WEDSYNC_DEV_DEMO": "true"}


@pytest_asyncio.fixture
async def apis(settings: Settings) -> AsyncIterator[tuple[list[Api], int]]:
    """Two demo API processes and the conflicts worker's pid."""
    started = [Api(settings, DEMO), Api(settings, DEMO)]
    try:
        for api in started:
            await api.start()
        async with worker_process(settings, "conflicts") as worker:
            yield started, worker.pid
    finally:
        for api in started:
            await api.stop()


async def test_two_members_in_two_browser_tabs(
    settings: Settings, apis: tuple[list[Api], int], tmp_path: Path
) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH and `apt-get install chromium` was not possible")
    from playwright.async_api import Page, async_playwright, expect

    (first, second), worker = apis
    world = World(settings, first.base)
    await world.create()
    planner = await world.add("planner")
    users = {"couple": world.couple, "planner": planner}

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        contexts = {
            role: await browser.new_context(viewport={"width": 1280, "height": 860})
            for role in users
        }
        pages: dict[str, Page] = {}
        for role, user in users.items():
            page = pages[role] = await contexts[role].new_page()
            await page.goto(
                f"{first.base}/demo/?user={user}&name={role.title()}&wedding={world.wedding}"
            )
        a, b = pages["couple"], pages["planner"]
        for page in (a, b):
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "open", timeout=15000
            )

        # presence shows both
        await expect(a.locator(f"#others li[data-user='{planner}']")).to_be_visible()
        await expect(b.locator(f"#others li[data-user='{world.couple}']")).to_be_visible()

        # a chat message arrives in the other tab
        await a.fill("#chat-form input[name=text]", "Cake tasting on Friday?")
        await a.press("#chat-form input[name=text]", "Enter")
        await expect(b.locator("#chat li", has_text="Cake tasting on Friday?")).to_have_count(1)

        # concurrent edits of one task converge (last writer wins), the conflict is shown
        await a.fill("#task-form input[name=title]", "Book the florist")
        await a.press("#task-form input[name=title]", "Enter")
        row = "#tasks li[data-title='Book the florist']"
        await expect(b.locator(row)).to_have_count(1)
        task_id = await b.locator(row).get_attribute("data-id")
        assert task_id is not None
        await b.locator(f"{row} input.title").focus()  # the planner edits: the couple sees it
        await expect(a.locator(f"#tasks li[data-id='{task_id}'] .editors")).to_contain_text(planner)
        # both changes stored before the worker applies either: truly concurrent, each
        # based on version 1 (the worker paused, not the gateways: both are acked)
        edit = "([id, title]) => void window.wedsyncRoom.change('tasks', id, 'update', {title})"
        os.kill(worker, signal.SIGSTOP)
        try:
            await a.evaluate(edit, [task_id, "Florist: peonies"])
            await b.evaluate(edit, [task_id, "Florist: roses"])
            for page in (a, b):
                await expect(page.locator("#pending")).to_have_attribute("data-count", "0")
        finally:
            os.kill(worker, signal.SIGCONT)
        state = await eventually(lambda: _task_state(world, task_id, version=3), timeout=15)
        final = state["fields"]["title"]
        assert final in ("Florist: peonies", "Florist: roses")
        for page in (a, b):
            await expect(page.locator(f"#tasks li[data-id='{task_id}']")).to_have_attribute(
                "data-title", final
            )
            await expect(page.locator("#conflicts li", has_text=task_id)).not_to_have_count(0)

        # the gateway restarted under both tabs; messages sent meanwhile through the other
        await first.stop()
        for page in (a, b):
            await expect(page.locator("#status")).not_to_have_attribute(
                "data-state", "open", timeout=15000
            )
        missed = [f"while you were away {i}" for i in range(3)]
        other = World(settings, second.base)
        other.couple, other.wedding = world.couple, world.wedding
        token = await other.join(world.couple)
        ws = await connect(second.base, world.wedding, token)
        try:
            await recv_type(ws, "welcome")
            for i, text in enumerate(missed):
                await send(ws, type="message", id=f"away-{i}", channel="chat", data={"text": text})
                await recv_type(ws, "ack")
        finally:
            await ws.close()
        await first.start()
        for page in (a, b):
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "open", timeout=20000
            )
            for text in missed:
                await expect(page.locator("#chat li", has_text=text)).to_have_count(1)
        assert int(await a.locator("#status").get_attribute("data-connects") or 0) >= 2

        # an edit made offline is stored once after reconnecting
        await contexts["couple"].set_offline(True)
        await expect(a.locator("#status")).not_to_have_attribute(
            "data-state", "open", timeout=15000
        )
        offline_text = f"typed offline {uuid.uuid4().hex[:6]}"
        await a.fill("#chat-form input[name=text]", offline_text)
        await a.press("#chat-form input[name=text]", "Enter")
        await a.locator(f"#tasks li[data-id='{task_id}'] input.title").fill("Florist: tulips")
        await a.locator(f"#tasks li[data-id='{task_id}'] input.title").press("Enter")
        await expect(a.locator("#pending")).not_to_have_attribute("data-count", "0")
        await contexts["couple"].set_offline(False)
        await expect(a.locator("#status")).to_have_attribute("data-state", "open", timeout=20000)
        await expect(a.locator("#pending")).to_have_attribute("data-count", "0", timeout=15000)
        await expect(b.locator("#chat li", has_text=offline_text)).to_have_count(1)
        await expect(b.locator(f"#tasks li[data-id='{task_id}']")).to_have_attribute(
            "data-title", "Florist: tulips"
        )
        assert await _chat_count(world, offline_text) == 1
        await eventually(lambda: _task_state(world, task_id, version=4), timeout=15)

        await a.locator("#chat-form input[name=text]").focus()
        shot = SCREENSHOT if os.environ.get("WEDSYNC_DEMO_SCREENSHOT") else tmp_path / "demo.png"
        await a.screenshot(path=str(shot), full_page=True)
        await browser.close()


async def _task_state(world: World, task_id: str, version: int) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(f"/api/weddings/{world.wedding}/state", headers=world.auth(world.couple))
    if r.status_code != 200:
        return None
    task: dict[str, Any] | None = r.json()["entities"]["tasks"].get(task_id)
    return task if task is not None and task["version"] >= version else None


async def _chat_count(world: World, text: str) -> int:
    async with httpx.AsyncClient(base_url=world.base) as c:
        r = await c.get(
            f"/api/weddings/{world.wedding}/events?after_seq=0", headers=world.auth(world.couple)
        )
    assert r.status_code == 200
    return sum(
        1 for item in r.json()["events"] if item["event"].get("data", {}).get("text") == text
    )


async def test_shared_notes_and_typing_in_two_browser_tabs(
    settings: Settings, apis: tuple[list[Api], int]
) -> None:
    """The notes panel (yjs + y-websocket in the page, vendored: app/demo/static/vendor)
    on two gateway processes: both type, both converge, each sees the other's cursor; and
    "typing..." in chat (ephemeral signals)."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH and `apt-get install chromium` was not possible")
    from playwright.async_api import async_playwright, expect

    (first, second), _ = apis
    world = World(settings, first.base)
    await world.create()
    planner = await world.add("planner")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        pages = []
        for base, user, name in (
            (first.base, world.couple, "Couple"),
            (second.base, planner, "Planner"),
        ):
            page = await (await browser.new_context()).new_page()
            await page.goto(f"{base}/demo/?user={user}&name={name}&wedding={world.wedding}")
            await expect(page.locator("#notes-status")).to_have_attribute(
                "data-state", "synced", timeout=15000
            )
            pages.append(page)
        a, b = pages
        # (concurrent typing is tested with pycrdt and Node: tests/test_documents*.py; here
        # the second tab types after the first tab's text arrived, at its end)
        await a.locator("#notes-text").press_sequentially("Vows at four. ")
        await expect(b.locator("#notes-text")).to_have_value("Vows at four. ")
        await b.locator("#notes-text").press("End")
        await b.locator("#notes-text").press_sequentially("Cake at six. ")
        text = "() => window.wedsyncNotes.text.toString()"
        for page in (a, b):
            await expect(page.locator("#notes-text")).to_have_value("Vows at four. Cake at six. ")
        assert await a.evaluate(text) == await b.evaluate(text)
        assert await a.locator("#notes-text").input_value() == await a.evaluate(text)
        await expect(b.locator(f"#notes-cursors li[data-user='{world.couple}']")).to_contain_text(
            "Couple — line 1"
        )
        await expect(a.locator(f"#notes-cursors li[data-user='{planner}']")).to_contain_text(
            "Planner"
        )
        # typing in chat shows in the other tab, and ends when the message is sent
        await a.locator("#chat-form input[name=text]").press_sequentially("hel")
        await expect(b.locator("#typing")).to_contain_text("is typing")
        await a.press("#chat-form input[name=text]", "Enter")
        await expect(b.locator("#typing")).to_have_text("")
        await browser.close()
