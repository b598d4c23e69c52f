"""Screenshots for the docs: the demo's terminal status and the API's offline /docs.

Needs Chromium and chromedriver (Debian: `apt-get install chromium chromium-driver`) and selenium
(`uv pip install selenium`); neither is part of the project's lock. Run it while `newsrec demo`
runs (same NEWSREC_HOME):

    .venv/bin/python tools/screenshots.py --api http://127.0.0.1:8000 --out docs/img
"""

from __future__ import annotations

import argparse
import html
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from newsrec_assets.settings import local_paths

TERMINAL_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e1e; overflow: hidden; }}
pre {{ margin: 0; padding: 16px 20px; color: #d4d4d4; font: 14px/1.45 'DejaVu Sans Mono', monospace; }}
.bar {{ background: #3c3c3c; color: #ccc; font: 13px sans-serif; padding: 6px 12px; }}
</style></head><body><div class="bar">$ make demo</div><pre>{text}</pre></body></html>"""


def browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    # offline: every host name but the loopback address fails to resolve, so a page that needs a
    # CDN (Swagger UI's default) renders blank
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--status", type=Path, default=local_paths().home / "logs" / "status.txt")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    text = args.status.read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as page:
        page.write(TERMINAL_PAGE.format(text=html.escape(text)))
    driver = browser(1250, 200 + 22 * len(text.splitlines()))
    try:
        driver.get(f"file://{page.name}")
        driver.save_screenshot(str(args.out / "demo-terminal.png"))
    finally:
        driver.quit()

    driver = browser(1250, 1000)
    try:
        driver.get(f"{args.api}/docs")
        # Swagger UI renders the operations from /openapi.json: wait until they are on the page
        WebDriverWait(driver, 30).until(lambda d: d.find_elements("css selector", ".opblock-summary"))
        driver.save_screenshot(str(args.out / "api-docs-offline.png"))
    finally:
        driver.quit()
    print(f"wrote {args.out / 'demo-terminal.png'} and {args.out / 'api-docs-offline.png'}")


if __name__ == "__main__":
    main()
