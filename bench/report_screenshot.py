"""Render a run's HTML report in headless Chromium and save what a person sees, as a PNG.

    python bench/report_screenshot.py RUN_DIR [--width 1280] [--readme docs/report.png]

Writes RUN_DIR/report.html (`trainwell report RUN_DIR --html`) and RUN_DIR/report.png next to it:
a screenshot of the whole page (taken in a tall window, the empty bottom cropped). With --readme,
also a smaller copy of the page's top for the README. Needs Debian's `chromium` (apt-get install -y
chromium); CI does not run this script. Chromium runs with a fresh profile and its background
networking off: the page must render from the file alone.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, trainwell_cmd  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--hide-scrollbars", "--force-device-scale-factor=1"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("no Chromium found; install Debian's package: apt-get install -y chromium")


def screenshot(html: Path, png: Path, width: int, height: int) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        out = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                              f"--screenshot={png}", "--virtual-time-budget=3000", html.resolve().as_uri()],
                             capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if out.returncode != 0 or not png.is_file():
        sys.exit(f"chromium failed ({out.returncode}):\n{out.stderr[-3000:]}")


def crop_bottom(png: Path, margin: int = 24) -> tuple[int, int]:
    """Cut the empty page below the content (the window was taller than the page)."""
    from PIL import Image, ImageChops

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((rgb.width - 1, rgb.height - 1)))
    box = ImageChops.difference(rgb, background).getbbox()
    if box:
        rgb = rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + margin)))
    rgb.save(png)
    return rgb.size


def small_copy(png: Path, dest: Path, width: int, max_height: int) -> int:
    """A README-sized copy: the top ``max_height`` px of the page, scaled to ``width`` and quantized
    to 256 colours."""
    from PIL import Image

    with Image.open(png) as im:
        top = im.convert("RGB").crop((0, 0, im.width, min(im.height, max_height)))
        scaled = top.resize((width, round(top.height * width / top.width)), Image.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    scaled.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
    return dest.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=8000, help="window height; the empty bottom is cropped")
    ap.add_argument("--readme", type=Path, default=None, help="also write a small copy here (e.g. docs/report.png)")
    ap.add_argument("--readme-width", type=int, default=900)
    ap.add_argument("--readme-height", type=int, default=1900, help="page pixels kept in the README copy (from the top)")
    args = ap.parse_args()
    out = subprocess.run(trainwell_cmd("report", str(args.run_dir), "--html"), capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    html = args.run_dir / "report.html"
    png = args.run_dir / "report.png"
    screenshot(html, png, args.width, args.height)
    w, h = crop_bottom(png)
    print(f"{html} ({html.stat().st_size / 1e3:.0f} kB) -> {png} ({w} x {h} px)")
    if args.readme:
        size = small_copy(png, args.readme, args.readme_width, args.readme_height)
        print(f"README copy: {args.readme} ({size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
