"""A review that cannot lie and the pages a birder opens every day (issue 18), through the real
server on a copy of a database the real daemon filled (the heron burst, an owl, a deer, and a file
that is not a photo).

The browser side (the form's action, the queue's keys, phone width) is in test_web_browser.py.
"""

from __future__ import annotations

import io
import re
import threading
from datetime import datetime

import pytest

pytest.importorskip("fastapi", reason="birdtrap serve needs the web extra: pip install -e '.[web]'")
httpx = pytest.importorskip("httpx")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from test_web import auth, cli_json, fill_site, problem, start  # noqa: E402

from birdtrap.daemon.wiring import build_identifier  # noqa: E402

from conftest import HERON, rows  # noqa: E402

NOT_A_PHOTO = b"this is a text file with a photo's name\n" * 4


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review-site")
    config = fill_site_with_a_failure(folder)
    return config


def fill_site_with_a_failure(folder):
    # A file that is not a photo, in the inbox before the daemon starts: it fails with its reason.
    (folder / "inbox").mkdir()
    (folder / "inbox" / "notes-not-a-photo.jpg").write_bytes(NOT_A_PHOTO)
    return fill_site(folder)


@pytest.fixture(scope="module")
def server(site):
    running = start(site, thumbnail_cache=site.parent / "thumbs")
    yield running
    running.stop()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def events(api) -> list[dict]:
    return api.get("/api/v1/events", params={"all": True, "limit": 500}).json()["items"]


def the_owl(api) -> dict:
    (owl,) = [e for e in events(api) if e["scientific_name"] == "Athene cunicularia"]
    return owl


def heron(api) -> dict:
    (event,) = [e for e in events(api) if e["photo_count"] == len(HERON)]
    return event


def review(api, event_id: int, **body):
    return api.post(f"/api/v1/events/{event_id}/review", json=body, headers=auth())


def reviews_of(api, event_id: int) -> list[dict]:
    return api.get(f"/api/v1/events/{event_id}").json()["reviews"]


def undo_all(api, event_id: int) -> None:
    for r in reviews_of(api, event_id):
        assert api.delete(f"/api/v1/reviews/{r['id']}", headers=auth()).status_code == 200


# --- names ---------------------------------------------------------------------------------


def test_made_up_or_misspelt_species_are_refused_with_what_to_do_and_nothing_is_stored(api, site):
    owl = the_owl(api)
    body = problem(review(api, owl["id"], verdict="correct", species="Xyzzy plugh"), 422, "unknown-species")
    assert "'Xyzzy plugh' is not a species, genus, family or order that the models or the taxonomy know" in body["detail"]
    assert "write 'other: Xyzzy plugh'" in body["detail"]
    misspelt = problem(review(api, owl["id"], verdict="correct", species="Burowing owl"), 422, "unknown-species")
    assert "Did you mean 'Athene cunicularia (Burrowing Owl)'" in misspelt["detail"], misspelt
    assert reviews_of(api, owl["id"]) == []
    assert "Xyzzy" not in str(cli_json(site, "stats"))


def test_a_site_name_is_kept_only_as_an_explicit_other_and_counted_as_such(api, site):
    owl = the_owl(api)
    saved = review(api, owl["id"], verdict="correct", species="other:  Fence-post   owl")
    assert saved.status_code == 201, saved.text
    assert saved.json()["scientific_name"] == "other: Fence-post owl" and saved.json()["taxon_rank"] is None
    assert "other: Fence-post owl" in {row["scientific_name"] for row in cli_json(site, "stats")}
    undo_all(api, owl["id"])


def test_a_genus_or_family_of_the_taxonomy_and_a_common_name_are_known(api):
    owl = the_owl(api)
    family = review(api, owl["id"], verdict="correct", species="strigidae")
    assert family.status_code == 201, family.text
    assert (family.json()["scientific_name"], family.json()["taxon_rank"], family.json()["common_name"]) == ("Strigidae", "family", "Owls")
    genus = review(api, owl["id"], verdict="correct", species="Athene")
    assert (genus.json()["scientific_name"], genus.json()["taxon_rank"]) == ("Athene", "genus")
    common = review(api, owl["id"], verdict="correct", species="GREAT HORNED OWL")
    assert common.json()["label"] == "Bubo virginianus (Great Horned Owl)"
    undo_all(api, owl["id"])


def test_the_names_endpoint_suggests_model_labels_and_taxa_as_a_person_types(api):
    herons = api.get("/api/v1/names", params={"q": "grey her"}).json()
    assert herons[0] == {
        "label": "Ardea cinerea (Grey Heron)",
        "scientific_name": "Ardea cinerea",
        "common_name": "Grey Heron",
        "rank": "species",
    }
    family = api.get("/api/v1/names", params={"q": "ardeid"}).json()
    assert {
        "label": "Ardeidae (Herons, Egrets, and Bitterns)",
        "scientific_name": "Ardeidae",
        "common_name": "Herons, Egrets, and Bitterns",
        "rank": "family",
    } in family
    assert api.get("/api/v1/names", params={"q": "xyzzy"}).json() == []
    assert len(api.get("/api/v1/names", params={"q": "a", "limit": 7}).json()) == 7


# --- verdicts, bulk, undo ------------------------------------------------------------------


def test_blank_and_its_older_word_empty_both_mark_an_event_blank(api, site):
    owl = the_owl(api)
    for word in ("blank", "empty"):
        saved = review(api, owl["id"], verdict=word)
        assert saved.status_code == 201, saved.text
        assert saved.json()["kind"] == "blank"
        assert owl["id"] not in [e["event"] for e in cli_json(site, "events")]
    undo_all(api, owl["id"])
    assert owl["id"] in [e["event"] for e in cli_json(site, "events")]


def test_undo_takes_back_only_the_newest_verdict_and_what_it_taught_the_camera(api, site):
    owl = the_owl(api)
    examples = f"select label from camera_examples where sha256 in (select sha256 from images where event_id = {owl['id']})"
    first = review(api, owl["id"], verdict="confirm").json()
    second = review(api, owl["id"], verdict="correct", species="Bubo virginianus").json()
    assert rows(site.parent, examples) == [("Bubo virginianus",)]
    older = problem(api.delete(f"/api/v1/reviews/{first['id']}", headers=auth()), 409, "review-refused")
    assert f"review {first['id']} is no longer the newest of event {owl['id']} (review {second['id']} came after)" in older["detail"]
    undone = api.delete(f"/api/v1/reviews/{second['id']}", headers=auth())
    assert undone.status_code == 200, undone.text
    assert undone.json()["review"]["verdict"] == "confirmed"
    assert api.get(f"/api/v1/events/{owl['id']}").json()["scientific_name"] == "Athene cunicularia"
    assert rows(site.parent, examples) == [("Athene cunicularia",)]
    assert api.delete(f"/api/v1/reviews/{first['id']}", headers=auth()).json()["review"] is None
    assert api.get(f"/api/v1/events/{owl['id']}").json()["reviewed"] is None
    assert rows(site.parent, examples) == []
    problem(api.delete(f"/api/v1/reviews/{first['id']}", headers=auth()), 404, "no-such-review")
    problem(api.delete(f"/api/v1/reviews/{first['id']}"), 401, "token-missing")


def test_a_bulk_confirmation_is_all_or_none_and_names_the_events_it_cannot_confirm(api, site):
    birds = [e["id"] for e in events(api) if e["kind"] == "bird"]
    birdless = [e["id"] for e in events(api) if e["kind"] != "bird"]
    assert len(birds) >= 2 and birdless
    refused = problem(
        api.post("/api/v1/reviews", json={"verdict": "confirm", "event_ids": birds + birdless[:1]}, headers=auth()), 409, "review-refused"
    )
    assert f"event {birdless[0]} shows no bird to confirm" in refused["detail"]
    assert all(reviews_of(api, i) == [] for i in birds)
    saved = api.post("/api/v1/reviews", json={"verdict": "confirm", "event_ids": birds, "reviewer": "Ana"}, headers=auth())
    assert saved.status_code == 201, saved.text
    assert [(r["event_id"], r["verdict"], r["reviewer"]) for r in saved.json()] == [(i, "confirmed", "Ana") for i in birds]
    for r in saved.json():
        assert api.delete(f"/api/v1/reviews/{r['id']}", headers=auth()).status_code == 200
    assert all(reviews_of(api, i) == [] for i in birds)


# --- pages ---------------------------------------------------------------------------------


def test_the_review_queue_lists_unreviewed_events_unsure_and_least_sure_first(api):
    page = api.get("/review")
    assert page.status_code == 200
    shown = [int(i) for i in re.findall(r'<li data-event="(\d+)"', page.text)]
    priority = {"unsure": 0, "bird": 1, "animal": 2, "person": 2, "vehicle": 2, "blank": 3}
    expected = sorted(
        events(api), key=lambda e: (priority[e["kind"]], e["confidence"] or 0.0, -datetime.fromisoformat(e["start"]).timestamp(), -e["id"])
    )
    assert shown == [e["id"] for e in expected]
    owl = the_owl(api)
    saved = review(api, owl["id"], verdict="confirm").json()
    assert f'data-event="{owl["id"]}"' not in api.get("/review").text
    api.delete(f"/api/v1/reviews/{saved['id']}", headers=auth())


def test_the_today_page_shows_each_species_with_counts_times_and_its_best_photo(api):
    event = heron(api)
    day = event["start"][:10]
    page = api.get("/today", params={"day": day}).text
    birds = [
        s for s in api.get("/api/v1/sightings", params={"since": day, "limit": 500}).json()["items"] if s["captured_at"].startswith(day)
    ]
    herons = [s for s in birds if s["scientific_name"] == event["scientific_name"]]
    best = max(herons, key=lambda s: s["confidence"] or 0)
    assert f'data-species="{event["scientific_name"]}"' in page
    assert f"<strong>{len(herons)}</strong> photos in <strong>1</strong> event" in page
    first, last = min(s["captured_at"] for s in herons), max(s["captured_at"] for s in herons)
    assert f"first {first[11:16]} · last {last[11:16]}" in page
    assert f"/api/v1/photos/{best['id']}/thumbnail?size=320&amp;crop=true" in page
    empty_day = api.get("/today", params={"day": "1999-01-01"}).text
    assert "No birds on this day" in empty_day and 'href="/today?day=' in empty_day
    problem(api.get("/today", params={"day": "yesterday"}), 422, "bad-parameters")


def test_the_gallery_shows_every_species_once_with_its_best_photo(api):
    page = api.get("/gallery").text
    species = {s["scientific_name"] for s in api.get("/api/v1/sightings", params={"limit": 500}).json()["items"]}
    assert species and all(page.count(f'data-species="{name}"') == 1 for name in species)


def test_the_failed_page_lists_each_failed_photo_with_its_reason(api, site):
    failed = rows(site.parent, "select path, error from images where status = 'failed' order by id desc")
    assert any(path.endswith("notes-not-a-photo.jpg") for path, _ in failed), failed
    page = api.get("/failed").text
    assert f'Failed photos <span class="muted">({len(failed)})' in page
    for path, error in failed:
        assert path in page
        assert error.replace("'", "&#39;").replace('"', "&#34;").split(";")[0][:60] in page


def test_the_stats_page_has_a_species_by_hour_heatmap_and_charts_with_axis_values(api):
    page = api.get("/stats").text
    hours = api.get("/api/v1/stats", params={"by": "hour"}).json()["rows"]
    owl_hours = {int(r["hour"]) for r in hours if r["scientific_name"] == "Athene cunicularia"}
    assert owl_hours
    assert 'aria-label="photos per species and hour of day"' in page
    for hour in owl_hours:
        assert f"Burrowing Owl, {hour:02d}:00:" in page
    peak = max(sum(r["photos"] for r in hours if int(r["hour"]) == h) for h in range(24))
    ticks = [int(t) for t in re.findall(r"<span>(\d+)</span>", page.split('class="y-axis"')[1].split("</div>")[0])]
    assert ticks[-1] == 0 and ticks[0] >= peak, ticks


def test_a_cropped_thumbnail_shows_the_region_that_decided_with_its_box_drawn(api, site):
    boxed = rows(
        site.parent,
        "select id, width, height from images where status = 'done' and box_x0 is not null "
        "and (box_x1 - box_x0) * (box_y1 - box_y0) < 0.3 order by id limit 1",
    )
    assert boxed, "a heron or owl photo should have a detector box"
    photo_id = boxed[0][0]
    whole = Image.open(io.BytesIO(api.get(f"/api/v1/photos/{photo_id}/thumbnail", params={"size": 320}).content)).convert("RGB")
    crop = Image.open(io.BytesIO(api.get(f"/api/v1/photos/{photo_id}/thumbnail", params={"size": 320, "crop": True}).content)).convert(
        "RGB"
    )
    assert max(crop.size) == 320

    def amber(image: Image.Image) -> int:
        pixels = np.asarray(image).astype(int)
        return int(((abs(pixels[..., 0] - 255) < 40) & (abs(pixels[..., 1] - 196) < 40) & (pixels[..., 2] < 70)).sum())

    assert amber(crop) > 2 * max(crop.size)  # the box's outline, all four sides
    assert amber(crop) > 10 * amber(whole)


def test_a_browser_gets_errors_on_pages_as_a_page_and_the_api_keeps_problem_json(api):
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    missing = api.get("/events/424242", headers=browser)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "there is no event 424242" in missing.text and '<a href="/review">Review</a>' in missing.text
    nowhere = api.get("/no-such-page", headers=browser)
    assert nowhere.status_code == 404 and "there is no page at /no-such-page" in nowhere.text
    bad_day = api.get("/today", params={"day": "yesterday"}, headers=browser)
    assert bad_day.status_code == 422 and "day: &#x27;yesterday&#x27; is not a date; use YYYY-MM-DD." in bad_day.text
    problem(api.get("/api/v1/events/424242", headers=browser), 404, "no-such-event")


def test_names_are_checked_from_the_labels_file_while_the_model_still_loads(site):
    release = threading.Event()

    def slow_loader(config):
        release.wait(30)
        return build_identifier(config)

    loading = start(site, loader=slow_loader)
    try:
        with httpx.Client(base_url=loading.url, timeout=60) as client:
            assert client.get("/api/v1/health").json()["status"] == "loading"
            owl = the_owl(client)
            saved = client.post(
                f"/api/v1/events/{owl['id']}/review", json={"verdict": "correct", "species": "burrowing owl"}, headers=auth()
            )
            assert saved.status_code == 201, saved.text
            assert saved.json()["label"] == "Athene cunicularia (Burrowing Owl)"
            problem(
                client.post(f"/api/v1/events/{owl['id']}/review", json={"verdict": "correct", "species": "Xyzzy plugh"}, headers=auth()),
                422,
            )
            assert client.delete(f"/api/v1/reviews/{saved.json()['id']}", headers=auth()).status_code == 200
    finally:
        release.set()
        loading.stop()
