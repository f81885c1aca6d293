"""The manual's picture of the report (docs/img/report.png): `snaketune report` of a study, in Chromium.

    python docs/screenshot.py tuning_output [--plot "Learning curves"] [-o docs/img/report.png]

Needs the test extras (playwright) and a Chromium from the distribution's packages
(`apt-get install chromium-headless-shell`); playwright downloads no browser of its own here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path, help="the study's output directory")
    parser.add_argument("--plot", default="Learning curves", help="the plot to show (its title)")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "img" / "report.png")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    report = args.output_dir / "report.html"
    if not report.exists():
        subprocess.run([sys.executable, "-m", "snaketune.cli", "report", str(args.output_dir)], check=True)
    browser_path = next(filter(None, map(shutil.which, ("chromium-headless-shell", "chromium"))), None)
    if browser_path is None:
        sys.exit("no Chromium: apt-get install chromium-headless-shell")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(report.resolve().as_uri())
        page.get_by_role("link", name="Plots", exact=True).click()
        if not page.locator("tbody tr").count():  # several objectives: one subcategory each
            page.locator("nav a, a").filter(has_text="eval_").first.click()
        page.locator("tr", has_text=args.plot).first.locator("a").first.click()
        page.locator("img[src^='data:image/png']").last.wait_for(state="visible")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output))
        browser.close()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
