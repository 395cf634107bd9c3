"""The web page in a real browser: Debian's chromium, headless, driven by Selenium through chromedriver.

Nothing is downloaded: Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver (packages chromium and
chromium-driver, which .ci/run installs). Where they are missing the tests are skipped and say why.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]
WAIT_S = 60


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait_for(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message)


def open_page(driver, url: str) -> None:
    driver.get(url)
    ready = lambda d: d.find_element("css selector", "body").get_attribute("data-ready") == "true"  # noqa: E731
    wait_for(driver, ready, "page ready")


def loaded_thumbnails(driver, grid: str) -> list:
    """Cards of `grid` whose thumbnail image really arrived and decoded (naturalWidth > 0)."""
    cards = driver.find_elements("css selector", f"#{grid} .card")
    images = [c.find_element("css selector", "img.thumb") for c in cards]
    done = driver.execute_script("return arguments[0].map(i => i.complete && i.naturalWidth > 0)", images)
    return [c for c, ok in zip(cards, done, strict=True) if ok]


def test_uploading_a_photo_shows_the_nearest_photos_as_thumbnails(browser, server, served_index, tmp_path):
    open_page(browser, server.url)
    query = served_index.photos / "rings" / "rings_3.jpg"
    browser.find_element("id", "file").send_keys(str(query))
    wait_for(browser, lambda d: len(loaded_thumbnails(d, "results")) == 12, "12 result thumbnails")
    first = browser.find_elements("css selector", "#results .card")[0]
    assert first.find_element("css selector", ".badge").text == "1 · 1.000"
    assert first.find_element("css selector", ".title").text == "rings_3"
    assert "12 nearest to rings_3.jpg" in browser.find_element("id", "similar-message").text
    assert browser.find_element("id", "preview").get_attribute("src").startswith("blob:")
    browser.save_screenshot(str(tmp_path / "similar.png"))


def test_dropping_a_photo_and_asking_for_more_like_a_result(browser, server):
    open_page(browser, server.url)
    browser.find_element("id", "k").clear()
    browser.find_element("id", "k").send_keys("5")
    # a real drop event carrying a File, as a drag from the desktop makes
    browser.execute_script(
        """fetch('/photos/2/image').then(r => r.blob()).then(blob => {
          const data = new DataTransfer();
          data.items.add(new File([blob], 'dragged.jpg', {type: blob.type}));
          document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
        });"""
    )
    wait_for(browser, lambda d: len(loaded_thumbnails(d, "results")) == 5, "5 result thumbnails after a drop")
    assert "dragged.jpg" in browser.find_element("id", "similar-message").text
    browser.find_elements("css selector", "#results .card button.more")[1].click()
    wait_for(browser, lambda d: "nearest to #" in d.find_element("id", "similar-message").text, "more like this")
    wait_for(browser, lambda d: len(loaded_thumbnails(d, "results")) == 5, "thumbnails of the second search")


def test_a_non_image_upload_shows_the_servers_reason(browser, server, tmp_path):
    open_page(browser, server.url)
    bad = tmp_path / "notes.jpg"
    bad.write_text("these are notes, not a photo")
    browser.find_element("id", "file").send_keys(str(bad))
    wait_for(browser, lambda d: "not an image" in d.find_element("id", "similar-message").text, "error message")
    assert "error" in browser.find_element("id", "similar-message").get_attribute("class")
    assert browser.find_elements("css selector", "#results .card") == []


def test_a_collection_is_shown_in_clean_order_with_outliers_marked(browser, server):
    import httpx

    open_page(browser, server.url)
    browser.find_element("css selector", "nav button[data-tab=collections]").click()
    browser.find_element("id", "k-mad").clear()
    browser.find_element("id", "k-mad").send_keys("0.5")  # a tight cut, so that some photos are outliers
    browser.find_element("css selector", "#collection-list button[data-name=stripes]").click()
    wait_for(browser, lambda d: len(loaded_thumbnails(d, "ranking")) == 8, "8 ranked thumbnails")
    expected = httpx.get(f"{server.url}collections/stripes/clean", params={"k_mad": 0.5}).json()
    marked = [c.get_attribute("data-id") for c in browser.find_elements("css selector", "#ranking .card.outlier")]
    assert expected["outliers"] > 0
    assert marked == [str(i["id"]) for i in expected["items"] if i["outlier"]]
    badges = [b.text for b in browser.find_elements("css selector", "#ranking .badge")]
    assert badges[0] == "#1" and badges[-1].startswith("outlier")


def test_a_classifiers_predictions_are_shown(browser, server):
    from selenium.webdriver.support.ui import Select

    open_page(browser, server.url)
    browser.find_element("css selector", "nav button[data-tab=classify]").click()
    Select(browser.find_element("id", "classifier")).select_by_value("shapes")
    Select(browser.find_element("id", "classify-collection")).select_by_value("rings")
    browser.find_element("css selector", "#classify-form button[type=submit]").click()
    wait_for(browser, lambda d: len(loaded_thumbnails(d, "predictions")) == 7, "7 predicted photos")
    labels = {e.text for e in browser.find_elements("css selector", "#predictions .label")}
    assert labels <= {"rings", "stripes"} and labels
    assert "shapes (logistic" in browser.find_element("id", "classify-message").text


def test_a_photo_can_be_classified_from_the_page(browser, server, served_index):
    from selenium.webdriver.support.ui import Select

    open_page(browser, server.url)
    browser.find_element("css selector", "nav button[data-tab=classify]").click()
    Select(browser.find_element("id", "classifier")).select_by_value("shapes")
    browser.find_element("id", "classify-file").send_keys(str(served_index.photos / "stripes" / "stripes_2.jpg"))
    wait_for(browser, lambda d: len(loaded_thumbnails(d, "predictions")) == 1, "the classified photo")
    label = browser.find_element("css selector", "#predictions .label").text
    assert label in ("rings", "stripes") and f'is "{label}"' in browser.find_element("id", "classify-message").text


DECIDED = "#ranking .card[data-decision=flag], #ranking .card[data-decision=keep]"


def test_two_photos_are_reviewed_with_the_keyboard_and_the_store_keeps_the_decisions(browser, served_index, tmp_path):
    import shutil

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    from imgidx.indexer.store import Store
    from imgidx.service.server import spawned

    home = tmp_path / "home"  # its own copy: the shared index must stay untouched by the other tests' server
    shutil.copytree(served_index.home, home)
    with spawned(home, env=served_index.env) as server:
        open_page(browser, server.url)
        browser.execute_script("localStorage.setItem('imgidx-reviewer', 'erin')")  # the name the page asks once
        open_page(browser, server.url)
        assert browser.find_element("id", "reviewer").get_attribute("value") == "erin"
        browser.find_element("css selector", "nav button[data-tab=collections]").click()
        assert "accept the flag" in browser.find_element("id", "shortcuts").text
        browser.find_element("css selector", "#collection-list button[data-name=rings]").click()
        wait_for(browser, lambda d: len(loaded_thumbnails(d, "ranking")) == 7, "7 ranked thumbnails")
        wait_for(browser, lambda d: d.find_elements("css selector", "#ranking .card.current"), "a current card")
        cards = [c.get_attribute("data-id") for c in browser.find_elements("css selector", "#ranking .card")]
        keys = ActionChains(browser)

        def press(key: str, decided: int) -> None:
            keys.send_keys(key).perform()

            def done(d) -> bool:
                return len(d.find_elements("css selector", DECIDED)) == decided

            wait_for(browser, done, f"{decided} decided cards after {key!r}")

        press("a", 1)  # accept the first photo's flag; the cursor moves on
        press("r", 2)  # keep the second
        press("u", 1)  # undo the keep
        press(Keys.ARROW_RIGHT, 1)  # the cursor stayed on the undone card: move past it and back
        press("k", 1)
        press("r", 2)
        current = browser.find_element("css selector", "#ranking .card.current").get_attribute("data-id")
        assert current == cards[2]
        first = browser.find_element("css selector", f"#ranking .card[data-id='{cards[0]}']")
        assert "flagged by erin" in first.text and "decided-flag" in first.get_attribute("class")
        browser.save_screenshot(str(tmp_path / "review.png"))
        queue = decide_the_review_next_queue(browser, server, "stripes", 8)  # issue 20: the same keys, a queue
    with Store(home, readonly=True) as store:
        rows = [(r["photo_id"], r["decision"], r["reviewer"], r["source"]) for r in store.reviews("stripes")]
        assert rows[:2] == [(int(queue[0]), "flag", "erin", "clean"), (int(queue[1]), "keep", "erin", "clean")]
        assert len(rows) == 8
        rows = [(r["photo_id"], r["decision"], r["reviewer"], r["source"]) for r in store.reviews("rings")]
        assert rows == [(int(cards[0]), "flag", "erin", "clean"), (int(cards[1]), "keep", "erin", "clean")]
        assert int(cards[0]) not in store.vector_ids("rings", include_flagged=False)
        assert len(store.reviews("rings", history=True)) == 2  # the undone keep is gone


def decide_the_review_next_queue(browser, server, name: str, n: int) -> list[str]:
    """The "review next" view of `name` (n photos, fewer than one queue): the same keys decide it; when every card
    is decided the queue refills, and with nothing left it says so. Returns the queue's ids in order."""
    import httpx
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    browser.find_element("css selector", f"#collection-list button[data-name={name}]").click()
    wait_for(browser, lambda d: d.find_element("id", "clean-message").text.startswith(f"{name}:"), "its ranking")
    Select(browser.find_element("id", "review-view")).select_by_value("next")  # the view change shows the queue

    def queued(d) -> bool:
        try:
            return (
                "to review next" in d.find_element("id", "clean-message").text
                and len(loaded_thumbnails(d, "ranking")) == n
            )
        except StaleElementReferenceException:  # the grid was replaced while it was looked at
            return False

    wait_for(browser, queued, f"{n} photos to review next")
    expected = httpx.get(f"{server.url}collections/{name}/next", params={"n": 12}).json()
    cards = [c.get_attribute("data-id") for c in browser.find_elements("css selector", "#ranking .card")]
    assert cards == [str(p["id"]) for p in expected["photos"]]  # the queue's order: most useful first
    assert "to review next" in browser.find_element("id", "clean-message").text
    browser.find_element("css selector", "#ranking .card img").click()  # the keys go to the page, not the <select>
    keys = ActionChains(browser)
    for key, decided in (("a", 1), ("r", 2), ("u", 1), ("r", 2), *(("r", k) for k in range(3, n))):
        keys.send_keys(key).perform()
        wait_for(browser, lambda d, k=decided: len(d.find_elements("css selector", DECIDED)) == k, f"{decided}")
    keys.send_keys("r").perform()  # the last one: the queue refills, and nothing is left to review
    wait_for(browser, lambda d: "every photo is reviewed" in d.find_element("id", "review-message").text, "the end")
    return cards
