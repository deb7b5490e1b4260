"""What the cloud shows must exist and be readable (issue 16 point 6): a run message names only
the images uploaded, and the annotated image is drawn at a size a person can check."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np

from core.wire import RunEvent, RunMessage, encode_message, parse_message
from edge.detect.plate import decode
from edge.files.images import display_images
from edge.sync.worker import only_uploaded
from tests.cloud.factory import deleted_event, run_message


def _with_all_three() -> str:
    msg = run_message(site="site-1", device="edge-1", sample_number="S-1")
    refs = [
        {"role": role, "key": f"site-1/edge-1/{msg.run_id}/{role}.jpg"}
        for role in ("raw", "annotated", "thumbnail")
    ]
    return json.dumps({**json.loads(encode_message(msg)), "images": refs})


def test_the_images_sent_are_the_uploaded_ones() -> None:
    text = _with_all_three()
    uploaded = [{"role": "annotated", "key": "site-1/edge-1/x/annotated.jpg", "size_bytes": 9}]
    sent = parse_message(only_uploaded(text, uploaded).encode())
    assert isinstance(sent, RunMessage)
    assert [(i.role, i.key) for i in sent.images] == [("annotated", uploaded[0]["key"])]
    none = parse_message(only_uploaded(text, []).encode())
    assert isinstance(none, RunMessage) and none.images == ()


def test_events_pass_unchanged() -> None:
    event = encode_message(
        deleted_event(run_message(site="s", device="d", sample_number="S").run_id, 1)
    ).decode()
    assert only_uploaded(event, []) == event
    assert isinstance(parse_message(event.encode()), RunEvent)


def test_the_annotated_image_is_not_reduced_to_the_models_size() -> None:
    frame = np.full((1200, 1700, 3), 200, dtype=np.uint8)  # the reference system's frame size
    ok, buf = cv2.imencode(".jpg", frame)
    assert ok
    detector = SimpleNamespace(
        backend="onnx", model=SimpleNamespace(input=SimpleNamespace(height=320, width=320))
    )
    small, factor, _, _ = decode(detector, bytes(buf))
    assert factor == 4 and small.shape[1] == 425  # what the model alone needs
    image, factor, full, _ = decode(detector, bytes(buf), min_width=1280)
    assert image.shape[1] == 1700 and factor == 1 and full is None
    wide, factor, full, _ = decode(detector, bytes(buf), min_width=800)
    assert wide.shape[1] == 850 and factor == 2 and full == (1700, 1200)
    files = display_images(image, [], None, 1.0, max_width=1280, thumbnail_width=320)
    annotated = cv2.imdecode(np.frombuffer(files["annotated.jpg"], np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape[1] == 1280
