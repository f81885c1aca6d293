"""MkDocs hook: the README is the manual's landing page.

The site's index.md is replaced by the checkout's README.md, its links into docs/ made relative to
the site (`docs/config.md` -> `config.md`), so one file is both GitHub's front page and the site's.
"""

from __future__ import annotations

import re
from pathlib import Path

# `](docs/x.md)` and `](docs/img/x.png)` in the README: the same files, seen from docs/.
DOCS_LINK = re.compile(r"\]\(docs/")


def _readme(config) -> Path:
    return Path(config["config_file_path"]).parent / "README.md"


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "index.md":
        return markdown
    return DOCS_LINK.sub("](", _readme(config).read_text())


def on_serve(server, config, builder):
    server.watch(str(_readme(config)))  # `mkdocs serve` rebuilds when the README changes
