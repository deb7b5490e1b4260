"""The appliance and the cloud present a result the same way (issue 16 point 7): both take
titres, flags, well colours and units from `core.present`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from core import present
from tests.cloud.factory import run_message

ROOT = Path(__file__).resolve().parents[1]


def test_both_stylesheets_carry_the_shared_well_colours() -> None:
    block = present.well_css()
    for css in ("edge/ui/static/app.css", "cloud/web/static/dashboard.css"):
        text = (ROOT / css).read_text(encoding="utf-8")
        assert block in text, f"{css}: paste `python -m core.present` between the markers"
        outside = text.replace(block, "")
        for state in present.WELL_STYLES:
            assert f".well.{state} {{" not in outside, f"{css} colours .well.{state} itself"


def test_the_appliance_words_for_flags_are_the_shared_ones() -> None:
    en = json.loads((ROOT / "edge/ui/translations/en.json").read_text(encoding="utf-8"))
    for flag, label in present.FLAG_LABELS.items():
        assert en[f"flag.{flag}"] == label, flag


def test_the_cloud_run_page_shows_censored_titres_and_flag_words() -> None:
    from cloud.web.render import templates

    msg = run_message(
        site="s", device="d", sample_number="S-1", endpoints=(12, 0, 5, 5, 5, 5, 5, 5)
    )
    run = {
        "run_id": str(msg.run_id),
        "sample_id": str(uuid.uuid4()),
        "sample_number": "S-1",
        "read_at": msg.captured_at,
        "status": "current",
        "extra": {"dilution": {"start_dilution": 10, "factor": 2}},
        "rows": [r.model_dump(mode="json") for r in msg.rows],
    }
    html = templates.get_template("run.html").render(
        run=run, grid=[], row_labels=[], cols=[], has_image=False, me=None
    )
    assert "≥ 20480" in html and "&lt; 10" in html  # "< 10", escaped
    assert "all inhibited" in html and "no inhibition" in html
    assert '<td class="num">–</td>' not in html  # the old page's bare dash for "< 10"
