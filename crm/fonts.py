"""Build the Noto Sans TC web font the dashboard serves and the mailed reports inline: only the
characters they show.

Headless Chromium and many office machines have no CJK font, so the dashboard ships its own.
Noto Sans TC is ~7 MB per weight; the dashboard needs a few hundred distinct characters, so
this script cuts the font to them (all non-ASCII characters of the dashboard's sources, its
templates, the reports module, the reasons, segment and tier labels, plus printable ASCII and
common CJK punctuation) and writes one WOFF2 file of some tens of kilobytes (reading and writing WOFF2 needs the
``brotli`` package, only for this script). Rebuild it when the
zh-TW strings change (a test checks every character is in the font)::

    npm pack @fontsource/noto-sans-tc@5.3.0            # the npm registry's package (SIL OFL 1.1)
    python -m crm.fonts fontsource-noto-sans-tc-5.3.0.tgz

The package splits the font into ~100 WOFF2 files by unicode range (listed in ``400.css``);
the script subsets each file that holds a needed character and merges the pieces into one.
"""

from __future__ import annotations

import argparse
import re
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
FONT = HERE / "static" / "noto-sans-tc-subset.woff2"
FAMILY = "Noto Sans TC"

#: Sources whose characters the font must cover.
SOURCES = ("serving/dashboard/**/*.py", "serving/dashboard/templates/*.html", "serving/dashboard/static/*.js",
           "crm/*.py", "models/policy/reasons.py", "models/policy/winback.py", "features/rfm.py",
           "features/settings.py")
#: Plotly writes a negative tick (the Campaigns page's Qini and lift axes) with U+2212, the minus sign.
EXTRA = "　、。，．：；？！「」『』（）《》〈〉【】…—–·％＋－×÷→←↑↓≤≥年月日週天−"


def needed_characters(project: Path = PROJECT) -> set[str]:
    """Printable ASCII, CJK punctuation and every non-ASCII character of the dashboard's sources."""
    chars = {chr(c) for c in range(0x20, 0x7F)} | set(EXTRA)
    for pattern in SOURCES:
        for path in project.glob(pattern):
            if path.suffix in (".py", ".html", ".js") and path.name != "fonts.py":
                chars |= {ch for ch in path.read_text(encoding="utf-8") if ord(ch) > 0x7F and ch.isprintable()}
    return chars


def _ranges(css: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """(woff2 file name, unicode ranges) of each @font-face in a fontsource CSS file."""
    out = []
    for block in re.findall(r"@font-face\s*{(.*?)}", css, flags=re.S):
        file = re.search(r"files/([^)]+\.woff2)", block)
        ranges = re.search(r"unicode-range:\s*([^;]+);", block)
        if file is None or ranges is None:
            raise ValueError(f"an @font-face without a woff2 file or unicode-range: {block.strip()[:80]}")
        name = file.group(1)
        spans = []
        for part in ranges.group(1).split(","):
            lo, _, hi = part.strip()[2:].partition("-")
            spans.append((int(lo, 16), int(hi or lo, 16)))
        out.append((name, spans))
    return out


def build(package: Path, out: Path = FONT, weight: int = 400) -> tuple[Path, set[str]]:
    """Subset the package's font (a ``.tgz`` from ``npm pack`` or its unpacked folder) to
    :func:`needed_characters`; the file written and the characters the font lacks."""
    from fontTools import subset
    from fontTools.merge import Merger
    from fontTools.ttLib import TTFont

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if package.is_file():
            with tarfile.open(package) as tar:
                tar.extractall(root, filter="data")
            package = root / "package"
        chars = needed_characters()
        pieces: list[str] = []
        covered: set[str] = set()
        for name, spans in _ranges((package / f"{weight}.css").read_text()):
            mine = {c for c in chars if any(lo <= ord(c) <= hi for lo, hi in spans)} - covered
            if not mine:
                continue
            font = TTFont(package / "files" / name)
            options = subset.Options()
            options.flavor = None
            options.layout_features = ["*"]
            subsetter = subset.Subsetter(options)
            subsetter.populate(unicodes=[ord(c) for c in mine])
            subsetter.subset(font)
            piece = root / f"{len(pieces)}.ttf"
            font.save(piece)
            pieces.append(str(piece))
            covered |= mine
        merged = Merger().merge(pieces)
        for record in merged["name"].names:
            if record.nameID in (1, 4, 16):
                record.string = FAMILY
        merged.flavor = "woff2"
        out.parent.mkdir(parents=True, exist_ok=True)
        merged.save(out)
    return out, chars - covered


def main(argv: list[str] | None = None) -> int:
    """Build the subset from the package given on the command line; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m crm.fonts", description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="fontsource-noto-sans-tc-*.tgz or its unpacked folder")
    parser.add_argument("--out", type=Path, default=FONT)
    args = parser.parse_args(argv)
    out, missing = build(args.package, args.out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes); characters not in the font: "
          f"{''.join(sorted(missing)) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
