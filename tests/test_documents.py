"""The documents stay within their lengths, their links lead to files that exist, and Image/ holds only
figures that a document shows."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = {"README.md": 200, "REPRODUCTION.md": 300, "BENCHMARKS.md": 300}
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # the target of a markdown link or image, without its anchor
ANCHORED = re.compile(r"\]\(([^)#\s]*)#([^)\s]+)\)")  # a link's target (empty: the same document) and anchor


def documents() -> list[Path]:
    """Every markdown file of the repository, outside hidden folders."""
    return [p for p in ROOT.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def is_web_address(target: str) -> bool:
    """Whether a link's target is a web address rather than a path in the repository."""
    return re.match(r"[a-z]+://", target) is not None


def local_links(document: Path) -> list[str]:
    """The targets of a document's links and images that are paths in the repository."""
    return [t for t in LINK.findall(document.read_text()) if not is_web_address(t)]


@pytest.mark.parametrize("name", sorted(MAX_LINES))
def test_each_document_is_within_its_length(name):
    lines = len((ROOT / name).read_text().splitlines())
    assert lines <= MAX_LINES[name], f"{name} has {lines} lines; at most {MAX_LINES[name]}"


def test_every_link_in_the_documents_leads_to_a_file_that_exists():
    broken = [f"{d.relative_to(ROOT)}: {t}" for d in documents() for t in local_links(d)
              if not (d.parent / t).exists()]
    assert not broken


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but hyphens dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """The anchors of a document's headings (lines starting with # outside fenced code)."""
    found, in_code = set(), False
    for line in document.read_text().splitlines():
        in_code ^= line.startswith("```")
        if line.startswith("#") and not in_code:
            found.add(heading_anchor(line.lstrip("#")))
    return found


def test_every_anchor_in_the_documents_names_a_heading_of_its_document():
    broken = [f"{d.relative_to(ROOT)}: {target}#{anchor}" for d in documents()
              for target, anchor in ANCHORED.findall(d.read_text())
              if not is_web_address(target) and anchor not in anchors(d.parent / target if target else d)]
    assert not broken


def test_heading_anchors_follow_githubs_rule():
    assert heading_anchor(" Larger batches at the WAV preset: detection quality") == \
        "larger-batches-at-the-wav-preset-detection-quality"
    assert heading_anchor(" `--deterministic`: repeatable GPU runs, and their cost") == \
        "--deterministic-repeatable-gpu-runs-and-their-cost"


def test_image_holds_only_figures_that_a_document_shows():
    shown = {(d.parent / t).resolve() for d in documents() for t in local_links(d)}
    unshown = [p.name for p in (ROOT / "Image").iterdir() if p.resolve() not in shown]
    assert not unshown, f"figures no document shows: {unshown}"


def test_the_link_pattern_finds_images_and_links_and_drops_anchors():
    text = "See ![a](Image/a.png) and [b](docs/METHOD.md#presets), not [c](https://example.org/x)."
    assert LINK.findall(text) == ["Image/a.png", "docs/METHOD.md", "https://example.org/x"]
