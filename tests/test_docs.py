"""The documentation site: `mkdocs build --strict`, then headless Chromium finds no broken image.

Needs the `docs` extra (MkDocs, Selenium) and Debian's `chromium` and `chromium-driver`
(`.ci/run` installs them); skipped with a message when they are absent.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e "
                        "'.[docs]')")
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "JAX_PLATFORMS": "cpu",
                            "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_site_builds_strictly_with_every_page(site):
    import sgdlab.experiments as ex

    for name in ex.names():
        page = site / "experiments" / name / "index.html"
        assert page.exists(), name
        assert "<table>" in page.read_text()  # the parameter table
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "notebooks" / nb.stem / "index.html").exists(), nb.stem
    for page in ("getting-started", "conventions", "benchmarks", "api/analysis"):
        assert (site / page / "index.html").exists(), page
    conventions = (site / "conventions" / "index.html").read_text()
    for topic in ("half_mean", "m_t = μ m_{t−1} + g_t", "fold_in", "pre-update parameters"):
        assert topic in conventions, topic
    assert "kaplan_meier" in (site / "api" / "analysis" / "index.html").read_text()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[docs]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(site):
    (site / "broken-on-purpose.html").write_text(
        '<html><body><img src="figures/lzu-stationary.png"><img src="no-such.png"></body></html>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def images(browser, url):
    """(src, loaded) of every <img> on the page once it has loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    wait.until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete)"))
    return browser.execute_script(
        "return Array.from(document.images).map(i => [i.currentSrc || i.src, i.naturalWidth > 0])")


def test_browser_finds_no_broken_image(browser, served):
    # the checker sees a broken image (a page made broken on purpose)
    probe = images(browser, f"{served}/broken-on-purpose.html")
    assert [ok for _, ok in probe] == [True, False]
    for page in ("", "experiments/lzu-stationary/", "experiments/escape/"):
        found = images(browser, f"{served}/{page}")
        assert found, f"no image on /{page}"
        broken = [src for src, ok in found if not ok]
        assert not broken, f"broken images on /{page}: {broken}"
