"""The web page in a real browser: Debian's chromium, headless, driven by Playwright.

The daemon keeps running beside the server the whole time, as on a Pi: the page shows the heron
event with its thumbnail, a species filter narrows the list, a photo dropped in the watch folder
appears without a reload, and a correction made on the review page shows in `birdtrap sightings`.
Screenshots are saved in the pytest temporary folder (`screenshots*`) for a person to look at.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to test the page", allow_module_level=True)
pytest.importorskip("fastapi", reason="birdtrap serve needs the web extra: pip install -e '.[web]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright: pip install playwright")

import httpx  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from birdtrap import config as config_module  # noqa: E402
from birdtrap.cli import cli  # noqa: E402
from birdtrap.web import ServeSettings, create_app  # noqa: E402
from birdtrap.web.app import BackgroundServer  # noqa: E402

from conftest import HERON, DaemonProcess, copy_photo, photo, rows, wait_for, write_config  # noqa: E402

TOKEN = "browser-review-token-0123"
# Never `playwright install`: the system's chromium, with nothing that phones home.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Live:
    config: Path
    folder: Path
    url: str
    heron_event: int


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    config = write_config(folder)
    for path in HERON:
        copy_photo(path.name, folder / "inbox")
    copy_photo("IMG_1435.JPG", folder / "inbox")
    (folder / "inbox" / "notes-not-a-photo.jpg").write_bytes(b"a text file with a photo's name\n" * 4)  # the failed page
    daemon = DaemonProcess(config)
    server = None
    try:
        wait_for(lambda: len([r for r in rows(folder) if r[1] == "done"]) >= len(HERON) + 1, timeout=120, what="the daemon's backlog")
        settings = ServeSettings(token=TOKEN, refresh_seconds=1, thumbnail_cache=folder / "thumbs")
        app = create_app(config_module.load(config), settings)
        server = BackgroundServer(app).start()
        app.state.web.classifier.wait_ready(60)
        (heron,) = rows(folder, f"select event_id from images group by event_id having count(*) = {len(HERON)}")
        yield Live(config, folder, server.url, heron[0])
    finally:
        if server is not None:
            server.stop()
        daemon.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 412, "height": 915}, device_scale_factor=1)  # a phone
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def event_of(live: Live, event_id: int) -> dict:
    return httpx.get(f"{live.url}/api/v1/events/{event_id}", timeout=30).json()


def image_loaded(locator) -> bool:
    return locator.evaluate("img => img.complete && img.naturalWidth > 0")


def test_the_page_shows_the_heron_event_with_its_thumbnail(live, page, screenshots):
    heron = event_of(live, live.heron_event)
    page.goto(live.url)
    card = page.locator(f'li[data-event="{live.heron_event}"]')
    sync_api.expect(card).to_contain_text(heron["common_name"])
    sync_api.expect(card).to_contain_text(heron["scientific_name"])
    sync_api.expect(card).to_contain_text(f"{heron['confidence'] * 100:.0f}%")
    thumbnail = card.locator("img")
    thumbnail.scroll_into_view_if_needed()
    wait_for(lambda: image_loaded(thumbnail), timeout=15, what="the heron thumbnail")
    assert thumbnail.evaluate("img => img.naturalWidth") <= 320
    assert f"/api/v1/photos/{heron['cover_photo_id']}/thumbnail" in thumbnail.get_attribute("src")
    page.screenshot(path=screenshots / "1-latest-events.png", full_page=True)


def test_a_species_filter_narrows_the_list(live, page, screenshots):
    page.goto(live.url)
    before = page.locator("li[data-event]").count()
    assert before >= 2
    page.select_option('select[name="species"]', "Athene cunicularia")
    with page.expect_navigation():
        page.click('button[type="submit"]')
    cards = page.locator("li[data-event]")
    sync_api.expect(cards).to_have_count(1)
    sync_api.expect(cards.first).to_contain_text("Burrowing Owl")
    assert "species=Athene+cunicularia" in page.url
    page.screenshot(path=screenshots / "2-filtered-to-the-owl.png", full_page=True)


def test_a_photo_dropped_in_the_watch_folder_appears_without_a_reload(live, page, screenshots):
    page.goto(live.url)
    sync_api.expect(page.locator(f'li[data-event="{live.heron_event}"]')).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")
    shutil.copyfile(photo("bird.bmp"), live.folder / "inbox" / "feeder-0001.bmp")
    newest = page.locator("li[data-event]").first
    sync_api.expect(newest).to_contain_text("Black-capped Chickadee", timeout=60_000)
    assert page.evaluate("window.stillTheSamePage") is True  # swapped in place, never reloaded
    wait_for(lambda: image_loaded(newest.locator("img")), timeout=15, what="the new thumbnail")
    page.screenshot(path=screenshots / "3-new-photo-appeared.png", full_page=True)


def test_a_correction_on_the_review_page_shows_in_birdtrap_sightings(live, page, screenshots):
    heron = event_of(live, live.heron_event)
    page.goto(f"{live.url}/events/{live.heron_event}")
    page.fill("#token", TOKEN)
    page.check('input[name="verdict"][value="correct"]')
    page.fill("#species", "Ardea cinerea (Grey Heron)")
    page.fill('input[name="reviewer"]', "Ana")
    page.click('button[type="submit"]')
    sync_api.expect(page.locator("#review-status")).to_contain_text("Saved: corrected as Ardea cinerea (Grey Heron)")
    sync_api.expect(page.locator("#current-review")).to_contain_text("reviewed: corrected")  # after the page reloads itself
    sync_api.expect(page.locator("h1")).to_contain_text("Grey Heron")
    page.screenshot(path=screenshots / "4-review-saved.png", full_page=True)
    result = CliRunner().invoke(cli, ["sightings", "--format", "json", "--config", str(live.config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    herons = [row for row in json.loads(result.output) if row["event"] == live.heron_event]
    assert len(herons) == heron["bird_photo_count"]
    assert {row["scientific_name"] for row in herons} == {"Ardea cinerea"} and {row["common_name"] for row in herons} == {"Grey Heron"}
    table = CliRunner().invoke(cli, ["sightings", "--species", "grey heron", "--config", str(live.config)], catch_exceptions=False)
    assert "Ardea cinerea" in table.output and heron["scientific_name"] not in table.output


def test_the_species_and_stats_pages_show_photos_and_charts(live, page, screenshots):
    page.goto(live.url)
    page.click('li[data-event] a:has-text("Burrowing Owl")')
    sync_api.expect(page.locator("h1")).to_contain_text("Burrowing Owl")
    sync_api.expect(page.locator(".grid figure")).to_have_count(1)
    sync_api.expect(page.locator('svg.chart[aria-label="photos per day"] rect')).to_have_count(1)
    page.screenshot(path=screenshots / "5-species-page.png", full_page=True)
    page.click('nav a:has-text("Stats")')
    sync_api.expect(page.locator("table")).to_contain_text("Athene cunicularia")
    sync_api.expect(page.locator("table")).to_contain_text("Grey Heron")  # the correction counts in the stats too
    sync_api.expect(page.locator('svg.chart[aria-label="photos per hour of day"] rect')).to_have_count(24)
    page.screenshot(path=screenshots / "6-stats-page.png", full_page=True)


def test_a_wrong_token_is_told_on_the_review_page(live, page):
    page.goto(f"{live.url}/events/{live.heron_event}")
    page.fill("#token", "not-the-token-at-all")
    page.check('input[name="verdict"][value="blank"]')
    page.click('button[type="submit"]')
    sync_api.expect(page.locator("#review-status")).to_contain_text("not this server's serve.token")
    assert event_of(live, live.heron_event)["reviewed"] != "empty"


# --- issue 18: a review that cannot lie, the queue, the pages a birder opens every day ----------


def events_of(live: Live) -> list[dict]:
    return httpx.get(f"{live.url}/api/v1/events", params={"all": True, "limit": 500}, timeout=30).json()["items"]


def event_named(live: Live, scientific_name: str) -> dict:
    (event,) = [e for e in events_of(live) if e["scientific_name"] == scientific_name]
    return event


def take_back_reviews(live: Live, event_id: int) -> None:
    for review in event_of(live, event_id)["reviews"]:
        answer = httpx.delete(f"{live.url}/api/v1/reviews/{review['id']}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert answer.status_code == 200, answer.text


def test_typing_a_species_saves_a_correction_and_the_form_then_keeps_it(live, page, screenshots):
    owl = event_named(live, "Athene cunicularia")
    page.goto(f"{live.url}/events/{owl['id']}")
    assert page.is_checked('input[name="verdict"][value="confirm"]')
    page.fill("#token", TOKEN)
    page.fill("#species", "Bubo virginianus (Great Horned Owl)")  # without clicking "Correct the species"
    assert page.is_checked('input[name="verdict"][value="correct"]')
    page.click('button[type="submit"]')
    sync_api.expect(page.locator("#review-status")).to_contain_text("Saved: corrected as Bubo virginianus (Great Horned Owl)")
    sync_api.expect(page.locator("#current-review")).to_contain_text("reviewed: corrected")  # after the page reloads itself
    # Reopened, the form offers the correction: saving it unchanged keeps it.
    assert page.is_checked('input[name="verdict"][value="correct"]')
    assert page.input_value("#species") == "Bubo virginianus (Great Horned Owl)"
    page.screenshot(path=screenshots / "7-corrected-event-form.png", full_page=True)
    page.click('button[type="submit"]')
    sync_api.expect(page.locator("#review-status")).to_contain_text("Saved: corrected as Bubo virginianus")
    shown = event_of(live, owl["id"])
    assert [r["verdict"] for r in shown["reviews"]] == ["corrected", "corrected"]
    assert shown["scientific_name"] == "Bubo virginianus"
    take_back_reviews(live, owl["id"])


def test_a_made_up_species_is_refused_on_the_page_saying_what_to_do(live, page):
    owl = event_named(live, "Athene cunicularia")
    page.goto(f"{live.url}/events/{owl['id']}")
    page.fill("#token", TOKEN)
    page.fill("#species", "Xyzzy plugh")
    page.click('button[type="submit"]')
    status = page.locator("#review-status")
    sync_api.expect(status).to_contain_text("'Xyzzy plugh' is not a species, genus, family or order")
    sync_api.expect(status).to_contain_text("write 'other: Xyzzy plugh'")
    assert event_of(live, owl["id"])["reviews"] == []


def test_the_species_field_suggests_names_from_the_models_and_the_taxonomy(live, page):
    owl = event_named(live, "Athene cunicularia")
    page.goto(f"{live.url}/events/{owl['id']}")
    page.locator("#species").press_sequentially("ardeid", delay=30)
    options = page.locator("#names option")
    sync_api.expect(options.first).to_have_attribute("value", "Ardeidae (Herons, Egrets, and Bitterns)")


def test_the_review_queue_works_from_the_keyboard_with_bulk_confirm_and_undo(live, page, screenshots):
    owl = event_named(live, "Athene cunicularia")
    chickadee = event_named(live, "Poecile atricapillus")
    page.goto(f"{live.url}/review")
    page.fill("#token", TOKEN)
    page.locator("#token").dispatch_event("change")
    page.locator("h1").click()  # keys go to the page, not the token field
    cards = page.locator("#queue > li")
    order = [int(card.get_attribute("data-event")) for card in cards.all()]
    assert owl["id"] in order and chickadee["id"] in order and live.heron_event not in order  # the heron was reviewed above
    sync_api.expect(cards.first).to_have_class("current")
    owl_card = page.locator(f'#queue > li[data-event="{owl["id"]}"]')
    for _ in range(order.index(owl["id"])):
        page.keyboard.press("n")
    sync_api.expect(owl_card).to_have_class("current")
    page.screenshot(path=screenshots / "8-review-queue.png", full_page=True)

    page.keyboard.press("c")
    sync_api.expect(owl_card.locator(".outcome")).to_have_text("confirmed")
    assert event_of(live, owl["id"])["reviewed"] == "confirmed"
    page.keyboard.press("u")
    sync_api.expect(page.locator("#queue-status")).to_contain_text("Undone: 1 review")
    assert event_of(live, owl["id"])["reviewed"] is None
    sync_api.expect(owl_card).to_have_class("current")

    page.keyboard.press("b")
    sync_api.expect(owl_card.locator(".outcome")).to_have_text("blank")
    assert event_of(live, owl["id"])["kind"] == "blank"
    page.keyboard.press("u")
    sync_api.expect(owl_card.locator(".outcome")).to_have_text("")

    page.keyboard.press("s")
    field = owl_card.locator('.correct-form input[name="species"]')
    sync_api.expect(field).to_be_focused()
    field.fill("Strigidae")
    field.press("Enter")
    sync_api.expect(owl_card.locator(".outcome")).to_have_text("corrected: Strigidae (Owls)")
    assert event_of(live, owl["id"])["scientific_name"] == "Strigidae"
    page.keyboard.press("u")
    sync_api.expect(owl_card.locator(".outcome")).to_have_text("")

    # Select two birds with x, confirm them at once, then take both back with one undo.
    page.keyboard.press("x")
    chickadee_card = page.locator(f'#queue > li[data-event="{chickadee["id"]}"]')
    chickadee_card.locator(".pick").check()
    sync_api.expect(page.locator("#selected-count")).to_have_text("2")
    page.click("#confirm-selected")
    sync_api.expect(page.locator("#queue-status")).to_contain_text("Confirmed 2 events")
    assert event_of(live, owl["id"])["reviewed"] == event_of(live, chickadee["id"])["reviewed"] == "confirmed"
    page.screenshot(path=screenshots / "9-review-queue-bulk-confirmed.png", full_page=True)
    page.keyboard.press("u")
    sync_api.expect(page.locator("#queue-status")).to_contain_text("Undone: 2 reviews")
    assert event_of(live, owl["id"])["reviews"] == [] and event_of(live, chickadee["id"])["reviews"] == []


PAGES = {
    "today": "/today?day={day}",
    "review": "/review",
    "gallery": "/gallery",
    "stats": "/stats",
    "failed": "/failed",
    "latest": "/",
    "species": "/species/Athene cunicularia",
    "event": "/events/{event}",
}


def test_the_daily_pages_fit_a_phone_without_sideways_scroll(live, browser, screenshots):
    owl = event_named(live, "Athene cunicularia")
    wait_for(lambda: rows(live.folder, "select id from images where status = 'failed'"), timeout=60, what="the failed file")
    context = browser.new_context(viewport={"width": 375, "height": 812}, device_scale_factor=1)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        for name, path in PAGES.items():
            tab.goto(live.url + path.format(day=owl["start"][:10], event=owl["id"]))
            tab.wait_for_load_state("networkidle")
            tab.screenshot(path=screenshots / f"phone-{name}.png", full_page=True)
            wide = tab.evaluate("document.documentElement.scrollWidth")
            assert wide <= 375, f"{path} is {wide} px wide at a 375 px viewport: it scrolls sideways"
            inner = tab.evaluate(
                "[...document.querySelectorAll('main *')].filter(e => e.scrollWidth > e.clientWidth + 1 && "
                "['auto', 'scroll'].includes(getComputedStyle(e).overflowX)).map(e => e.className || e.tagName)"
            )
            assert inner == [], f"{path}: {inner} scroll sideways inside the page at 375 px"
            if name == "today":
                card = tab.locator('ul.today li[data-species="Athene cunicularia"]')
                sync_api.expect(card).to_contain_text("Burrowing Owl")
                sync_api.expect(card).to_contain_text("1 photo in 1 event")
                wait_for(lambda card=card: image_loaded(card.locator("img")), timeout=15, what="the owl's best photo")
            if name == "gallery":
                best = tab.locator('figure[data-species="Athene cunicularia"] img')
                sync_api.expect(best).to_have_attribute("src", re.compile("crop=true"))
            if name == "failed":
                sync_api.expect(tab.locator("ul.failed")).to_contain_text("not-a-photo.jpg")
            if name == "stats":
                sync_api.expect(tab.locator(".heatmap")).to_contain_text("Burrowing Owl")
                ticks = [int(t) for t in tab.locator(".y-axis span").all_inner_texts()]
                assert ticks[-1] == 0 and ticks[0] >= 1
    finally:
        context.close()
