"""The run report: one static HTML page (pictures inlined, no server) showing what every stage did.

Sections, each from the files the stages wrote: the **crops** (origin photos with their face boxes and crop
boxes), the **pseudo-labels** ordered by ``priority`` (likely failures first) with ``auto_accept`` marked, the
**review** (verdicts, decisions with their reasons, figures per annotator) and the **models** (per curated
photo: the accepted mask beside each SINet's, predicted here, with their IoU against it). Each section shows at
most ``limit`` pictures, so a run of thousands of photos still gives a page a browser opens at once (and the
models predict only those).
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.crop.preview import overlay
from sinet_plus import manifest as mf
from sinet_plus.files import write_text_atomic
from sinet_plus.imageio import IGNORE, STORED_UNKNOWN, read_image, read_mask

THUMB = 320
"""Long side of the pictures in the page, in pixels."""

FACE, CROP = (255, 140, 0), (0, 200, 80)
"""Box colours (RGB): detected faces orange, crop boxes green."""

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:%dpx}figure img{width:100%%;display:block}
figcaption{font-size:.85em;padding:.2em 0}.row{display:flex;gap:8px;margin-bottom:14px}.row figure{width:220px}
.badge{display:inline-block;padding:0 .4em;border-radius:3px;font-size:.8em;background:#ddd}
.auto{background:#2e7d32;color:#fff}.rejected{background:#c62828;color:#fff}.accepted{background:#1565c0;color:#fff}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
.legend span{margin-right:1em}.muted{color:#777}""" % THUMB


@dataclass
class ReportInputs:
    """The files a report is made of (any may be missing: its section then says so).

    Args:
        title: the page's title (e.g. the run config's name).
        crops: manifests written by ``crop-baidu``.
        labels: manifests written by ``pseudo-label``: the teacher's masks, or human masks it checked.
        review_db: the review store.
        curated: the exported training manifest.
        models: title → SINet checkpoint, for each model whose masks to show (missing files are left out).
        limit: most pictures per section.
    """

    title: str
    crops: list[Path] = field(default_factory=list)
    labels: list[Path] = field(default_factory=list)
    review_db: Path | None = None
    curated: Path | None = None
    models: dict[str, Path] = field(default_factory=dict)
    limit: int = 24


def picture(image: np.ndarray, side: int = THUMB) -> str:
    """A ``data:`` URI of ``image`` (RGB) as a JPEG with long side ``side``."""
    scale = side / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def figure(image: np.ndarray, alt: str, caption: str, side: int = THUMB) -> str:
    """An HTML figure of ``image``; ``caption`` is HTML already."""
    return (f'<figure><img src="{picture(image, side)}" alt="{html.escape(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def table(frame: pd.DataFrame) -> str:
    """A plain HTML table (empty cells for missing values); "none" for a table without rows."""
    if frame.empty:
        return "<p class='muted'>none</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{'' if v is None or v != v else html.escape(str(v))}</td>" for v in row)
                   + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _read(paths: list[Path], prefix_ids: bool = False) -> mf.Manifest | None:
    """The manifests that exist and have rows, stacked; ``prefix_ids`` prefixes ids with the manifest's number
    (crops of two sources may share photo stems)."""
    tables = [mf.read_manifest(p) for p in paths if p.is_file()]
    tables = [t for t in tables if len(t)]
    return mf.concat(tables, tables[0].root, prefix_ids=prefix_ids) if tables else None


def _box(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: tuple) -> None:
    thickness = max(2, round(max(image.shape[:2]) / 250))
    cv2.rectangle(image, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), colour, thickness)


def crops_section(inputs: ReportInputs) -> str:
    crops = _read(inputs.crops, prefix_ids=True)
    if crops is None:
        return "<p class='muted'>No crops in this run.</p>"
    frame = crops.frame
    parts = [f"<p>{len(frame)} crops from {frame['origin_stem'].nunique()} photos. <span class='legend'>"
             f"<span style='color:rgb{FACE}'>■ face</span><span style='color:rgb{CROP}'>■ crop box</span></span></p>",
             "<div class='grid'>"]
    for origin, group in list(frame.groupby("origin", sort=True))[:inputs.limit]:
        photo = read_image(crops.path(origin)).copy()
        for row in group.itertuples():
            _box(photo, row.face_x0, row.face_y0, row.face_x1, row.face_y1, FACE)
            _box(photo, row.crop_x0, row.crop_y0, row.crop_x1, row.crop_y1, CROP)
        parts.append(figure(photo, f"origin {group['origin_stem'].iloc[0]}",
                            f"{html.escape(str(group['origin_stem'].iloc[0]))}: {len(group)} crop(s)"))
    return "\n".join(parts + ["</div>"])


def _auto_accepted(labels: pd.DataFrame, decisions: pd.DataFrame | None) -> list[bool]:
    """The ``auto_accept`` column where the pseudo-labels have it, else the review's decisions by ``auto``."""
    if "auto_accept" in labels.columns:
        return [str(v).strip().lower() in ("true", "1", "1.0") for v in labels["auto_accept"]]
    auto = set() if decisions is None else set(decisions.loc[(decisions["annotator"] == "auto")
                                                             & (decisions["decision"] == "accept"), "key"])
    return [key in auto for key in labels["id"]]


def labels_section(inputs: ReportInputs, decisions: pd.DataFrame | None,
                   verdict: dict[str, tuple[str, str]]) -> str:
    labels = _read(inputs.labels)
    if labels is None:
        return "<p class='muted'>No masks from the teacher in this run.</p>"
    frame = labels.frame.assign(auto=_auto_accepted(labels.frame, decisions))
    frame = frame.sort_values("priority", ascending=False, kind="stable") if "priority" in frame else frame
    parts = [f"<p>{len(frame)} masks for review (the teacher's, or human masks it checked), most likely wrong "
             f"first; {int(frame['auto'].sum())} marked <code>auto_accept</code>.</p><div class='grid'>"]
    for row in frame.head(inputs.limit).itertuples():
        image = read_image(labels.path(row.image))
        mask = read_mask(labels.path(row.mask), unknown_value=STORED_UNKNOWN)
        priority = getattr(row, "priority", float("nan"))
        badges = "<span class='badge auto'>auto_accept</span>" if row.auto else "<span class='badge'>for people</span>"
        if row.id in verdict:
            status, reviewer = verdict[row.id]
            badges += f" <span class='badge {status}'>{status} by {html.escape(reviewer)}</span>"
        caption = (f"{html.escape(row.id)}<br>priority {'–' if math.isnan(float(priority)) else f'{priority:.3f}'}"
                   f" {badges}")
        parts.append(figure(overlay(image, mask), row.id, caption))
    return "\n".join(parts + ["</div>"])


def review_section(decisions: pd.DataFrame | None, verdicts: pd.DataFrame | None, store) -> str:
    if decisions is None:
        return "<p class='muted'>No review store in this run.</p>"
    from pipeline.review.stats import review_stats

    stats = review_stats(store)
    counts = verdicts["status"].value_counts().to_dict() if len(verdicts) else {}
    shown = decisions[["key", "annotator", "decision", "reason"]]
    return (f"<p>{len(verdicts)} items decided: {', '.join(f'{n} {s}' for s, n in counts.items()) or 'none'}.</p>"
            f"<h3>Per annotator</h3>{table(stats.throughput)}"
            f"<h3>Reject reasons</h3>{table(stats.reasons)}"
            f"<h3>Decisions</h3>{table(shown)}")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the person pixels of two masks, ignoring pixels either marks unknown."""
    known = (a != IGNORE) & (b != IGNORE)
    union = ((a == 1) | (b == 1)) & known
    return float(((a == 1) & (b == 1) & known).sum() / union.sum()) if union.any() else 1.0


def sinet_masks(weights: Path, photos: list[np.ndarray]) -> list[np.ndarray]:
    """The masks a SINet checkpoint gives the photos: person where its probability at the photo's size is above
    0.5, as ``sinet predict`` writes them."""
    from sinet.checkpoint import load_model
    from sinet.predict import predict

    model, preprocessing, _ = load_model(weights)
    return [(predict(model, preprocessing, photo).probability(photo.shape[:2]) > 0.5).astype(np.uint8)
            for photo in photos]


def models_section(inputs: ReportInputs) -> str:
    models = {title: path for title, path in inputs.models.items() if path.is_file()}
    if inputs.curated is None or not inputs.curated.is_file() or not models:
        return "<p class='muted'>No trained model in this run.</p>"
    curated = mf.read_manifest(inputs.curated)
    rows = curated.frame.head(inputs.limit)
    photos = [read_image(curated.path(v)) for v in rows["image"]]
    accepted = [read_mask(curated.path(v), unknown_value=STORED_UNKNOWN) for v in rows["mask"]]
    predicted = {title: sinet_masks(path, photos) for title, path in models.items()}
    scores = {title: [iou(mask, truth) for mask, truth in zip(masks, accepted)] for title, masks in predicted.items()}
    lines = []
    for index, (key, photo, truth) in enumerate(zip(rows["id"], photos, accepted)):
        cells = [figure(photo, f"photo {key}", html.escape(key), 220),
                 figure(overlay(photo, truth), f"accepted {key}", "accepted (teacher) mask", 220)]
        cells += [figure(overlay(photo, predicted[title][index]), f"{title} {key}",
                         f"{html.escape(title)}: IoU {scores[title][index]:.3f}", 220) for title in predicted]
        lines.append("<div class='row'>" + "".join(cells) + "</div>")
    means = ", ".join(f"{html.escape(title)} {np.mean(values):.3f}" for title, values in scores.items())
    return f"<p>Mean IoU with the accepted masks: {means}.</p>" + "\n".join(lines)


def write_report(inputs: ReportInputs, out: str | os.PathLike) -> Path:
    """Write the report page atomically and return its path."""
    from pipeline.review.export import verdicts as review_verdicts
    from pipeline.review.store import Store

    decisions = verdicts = store = None
    if inputs.review_db is not None and inputs.review_db.is_file():
        store = Store(inputs.review_db)
        decisions, verdicts = store.decisions_frame(), review_verdicts(store)
    try:
        verdict = ({key: (status, reviewer) for key, status, reviewer in
                    zip(verdicts["key"], verdicts["status"], verdicts["reviewer"])} if verdicts is not None else {})
        sections = [("crops", "Crops: faces and crop boxes", crops_section(inputs)),
                    ("pseudo-labels", "Pseudo-labels by priority", labels_section(inputs, decisions, verdict)),
                    ("review", "Review decisions", review_section(decisions, verdicts, store)),
                    ("models", "Trained SINet beside the accepted masks", models_section(inputs))]
    finally:
        if store is not None:
            store.close()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f"<section id='{key}'><h2>{html.escape(title)}</h2>{content}</section>"
                   for key, title, content in sections)
    nav = " · ".join(f"<a href='#{key}'>{html.escape(title)}</a>" for key, title, _ in sections)
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(inputs.title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(inputs.title)}</h1>"
            f"<p class='muted'>written {when}</p><nav>{nav}</nav>{body}</body></html>\n")
    write_text_atomic(out, page)
    return Path(out)
