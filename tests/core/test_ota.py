"""Signed model artefacts: every refusal verify_artefact promises, and the rollout messages."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from core.ota import (
    ArtefactError,
    ArtefactFile,
    GateCheck,
    GateReport,
    ModelManifest,
    canonical_bytes,
    encode_signed,
    generate_private_key,
    is_newer,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_text,
    sign_manifest,
    verify_artefact,
    version_order,
)
from core.rollout import ModelNotice, ModelReport, parse_notice, parse_report, shadow_decision
from core.topics import Topics


def _release(tmp_path: Path, *, formats: tuple[int, ...] = (96,)) -> tuple[Path, ModelManifest]:
    directory = tmp_path / "release"
    directory.mkdir()
    files = []
    for name, body in (("tilted.onnx", b"\x08\x01graph-a" * 500), ("untilted.onnx", b"g-b" * 700)):
        (directory / name).write_bytes(body)
        files.append(
            ArtefactFile(
                path=name,
                sha256=hashlib.sha256(body).hexdigest(),
                size_bytes=len(body),
                mode=name.split(".")[0],
                precision="fp32",
            )
        )
    manifest = ModelManifest(
        name="hi-wells",
        version="2.2.0",
        plate_formats=formats,  # type: ignore[arg-type]
        modes=("tilted", "untilted"),
        files=tuple(files),
        metrics={"field.wells_right": 0.93},
        created_at=datetime(2026, 12, 6, tzinfo=timezone.utc),
    )
    return directory, manifest


def test_a_signed_release_verifies_and_round_trips_keys(tmp_path: Path) -> None:
    key = load_private_key(private_key_pem(generate_private_key()))
    public = load_public_key(public_key_text(key))
    directory, manifest = _release(tmp_path)
    signed = sign_manifest(manifest, key)
    assert signed.key_id == key_id(public)
    assert verify_artefact(
        encode_signed(signed), directory, public_key=public, plate_format=96
    ) == (manifest)


def test_canonical_bytes_do_not_depend_on_key_order(tmp_path: Path) -> None:
    _, manifest = _release(tmp_path)
    shuffled = json.loads(manifest.model_dump_json())
    again = ModelManifest.model_validate(dict(reversed(list(shuffled.items()))))
    assert canonical_bytes(again) == canonical_bytes(manifest)
    assert b" " not in canonical_bytes(manifest)


def test_a_tampered_file_is_refused(tmp_path: Path) -> None:
    key = generate_private_key()
    directory, manifest = _release(tmp_path)
    blob = bytearray((directory / "tilted.onnx").read_bytes())
    blob[100] ^= 0x01  # one bit, same size
    (directory / "tilted.onnx").write_bytes(bytes(blob))
    with pytest.raises(ArtefactError) as err:
        verify_artefact(
            encode_signed(sign_manifest(manifest, key)),
            directory,
            public_key=key.public_key(),
            plate_format=96,
        )
    assert err.value.reason == "tampered"


def test_a_truncated_download_is_refused(tmp_path: Path) -> None:
    key = generate_private_key()
    directory, manifest = _release(tmp_path)
    full = (directory / "untilted.onnx").read_bytes()
    (directory / "untilted.onnx").write_bytes(full[: len(full) // 2])
    with pytest.raises(ArtefactError) as err:
        verify_artefact(
            encode_signed(sign_manifest(manifest, key)),
            directory,
            public_key=key.public_key(),
            plate_format=96,
        )
    assert err.value.reason == "truncated"


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    key = generate_private_key()
    directory, manifest = _release(tmp_path)
    (directory / "untilted.onnx").unlink()
    with pytest.raises(ArtefactError) as err:
        verify_artefact(
            encode_signed(sign_manifest(manifest, key)),
            directory,
            public_key=key.public_key(),
            plate_format=96,
        )
    assert err.value.reason == "missing_file"


def test_a_changed_manifest_fails_its_signature(tmp_path: Path) -> None:
    key = generate_private_key()
    directory, manifest = _release(tmp_path)
    doc = json.loads(encode_signed(sign_manifest(manifest, key)))
    # An attacker who swaps a file also rewrites its hash: the signature no longer matches.
    (directory / "tilted.onnx").write_bytes(b"evil" * 10)
    doc["manifest"]["files"][0]["sha256"] = hashlib.sha256(b"evil" * 10).hexdigest()
    doc["manifest"]["files"][0]["size_bytes"] = 40
    with pytest.raises(ArtefactError) as err:
        verify_artefact(
            json.dumps(doc).encode(), directory, public_key=key.public_key(), plate_format=96
        )
    assert err.value.reason == "bad_signature"


def test_a_forged_signature_under_the_right_key_id_is_refused(tmp_path: Path) -> None:
    trusted, other = generate_private_key(), generate_private_key()
    directory, manifest = _release(tmp_path)
    forged = sign_manifest(manifest, other).model_copy(update={"key_id": key_id(trusted)})
    with pytest.raises(ArtefactError) as err:
        verify_artefact(
            encode_signed(forged), directory, public_key=trusted.public_key(), plate_format=96
        )
    assert err.value.reason == "bad_signature"


def test_a_release_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    trusted, other = generate_private_key(), generate_private_key()
    directory, manifest = _release(tmp_path)
    with pytest.raises(ArtefactError) as err:
        verify_artefact(
            encode_signed(sign_manifest(manifest, other)),
            directory,
            public_key=trusted.public_key(),
            plate_format=96,
        )
    assert err.value.reason == "wrong_key"


def test_a_model_for_another_plate_format_is_refused(tmp_path: Path) -> None:
    key = generate_private_key()
    directory, manifest = _release(tmp_path, formats=(384,))
    with pytest.raises(ArtefactError) as err:
        verify_artefact(
            encode_signed(sign_manifest(manifest, key)),
            directory,
            public_key=key.public_key(),
            plate_format=96,
        )
    assert err.value.reason == "plate_format"


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[]", b'{"manifest": {}, "key_id": "x", "signature": "y"}', b"x" * 70000]
)
def test_garbage_is_malformed_not_a_crash(tmp_path: Path, data: bytes) -> None:
    key = generate_private_key()
    with pytest.raises(ArtefactError) as err:
        verify_artefact(data, tmp_path, public_key=key.public_key(), plate_format=96)
    assert err.value.reason == "malformed"


@pytest.mark.parametrize("name", ["../x.onnx", ".hidden", "a/b.onnx", ""])
def test_file_names_cannot_leave_the_release_directory(name: str) -> None:
    with pytest.raises(ValueError):
        ArtefactFile(path=name, sha256="0" * 64, size_bytes=1)


def test_gate_report_must_be_consistent() -> None:
    good = GateCheck(name="field.wells_right", candidate=0.95, baseline=0.94, passed=True)
    bad = GateCheck(name="generator.wells_right", candidate=0.9, baseline=0.98, passed=False)
    assert GateReport(accepted=False, checks=(good, bad), baseline_version="2.1.0")
    with pytest.raises(ValueError):
        GateReport(accepted=True, checks=(good, bad), baseline_version="2.1.0")
    with pytest.raises(ValueError):
        GateCheck(name="x", candidate=0.5, baseline=0.9, passed=True)
    within = GateCheck(name="x", candidate=0.895, baseline=0.9, tolerance=0.01, passed=True)
    assert within.passed


def test_notice_and_report_messages() -> None:
    notice = ModelNotice(
        assignment_id=uuid.uuid4(),
        revision=3,
        name="hi-wells",
        version="2.2.0",
        manifest_sha256="a" * 64,
        canary=True,
        shadow_plates=20,
        agreement_threshold=0.98,
        issued_at=datetime.now(timezone.utc),
    )
    assert parse_notice(notice.model_dump_json().encode()) == notice
    with pytest.raises(ValueError, match="shadow_plates"):
        parse_notice(
            notice.model_dump_json().replace('"shadow_plates":20', '"shadow_plates":0').encode()
        )
    assert Topics("lab", "dev-1").model == "microplate/v1/lab/dev-1/model"
    report = parse_report(
        {
            "assignment_id": str(notice.assignment_id),
            "version": "2.2.0",
            "state": "shadowing",
            "shadow_plates": 4,
            "agreement": 0.99,
            "at": "2026-12-06T10:00:00Z",
        }
    )
    assert isinstance(report, ModelReport) and report.agreement == 0.99
    with pytest.raises(ValueError, match="reason"):
        parse_report({**report.model_dump(mode="json"), "state": "rolled_back"})


@pytest.mark.parametrize(
    ("plates", "agreement", "current", "candidate", "expected"),
    [
        (5, 0.5, 0.0, 0.0, "continue"),
        (20, 0.99, 0.0, 0.0, "switch"),
        (20, 0.98, 0.0, 0.05, "switch"),
        (20, 0.90, 0.0, 0.0, "rollback"),
        (3, 1.0, 0.0, 0.5, "rollback"),
    ],
)
def test_shadow_decision(
    plates: int, agreement: float, current: float, candidate: float, expected: str
) -> None:
    assert (
        shadow_decision(
            plates=plates,
            agreement=agreement,
            shadow_plates=20,
            agreement_threshold=0.98,
            current_review_rate=current,
            candidate_review_rate=candidate,
        )
        == expected
    )


def test_the_ansible_template_hands_devices_a_key_they_can_load(tmp_path: Path) -> None:
    jinja2 = pytest.importorskip("jinja2")
    role = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "microplate_edge"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(role / "templates"), undefined=jinja2.StrictUndefined
    )
    key = generate_private_key()
    text = env.get_template("model-signing.pub.j2").render(
        microplate_edge_model_public_key=public_key_text(key) + "\n"
    )
    assert key_id(load_public_key(text)) == key_id(key)
    defaults = (role / "defaults" / "main.yml").read_text(encoding="utf-8")
    assert 'microplate_edge_model_public_key: ""' in defaults


def _notice(**kw: object) -> ModelNotice:
    fields: dict[str, object] = {
        "assignment_id": uuid.uuid4(),
        "revision": 1,
        "name": "hi-wells",
        "version": "2.2.0",
        "manifest_sha256": "c" * 64,
        "canary": True,
        "shadow_plates": 3,
        "agreement_threshold": 0.9,
        "issued_at": datetime.now(timezone.utc),
        **kw,
    }
    return ModelNotice.model_validate(fields)


def test_shadow_tally_measures_and_decides() -> None:
    from core.rollout import ShadowTally

    tally = ShadowTally(_notice())
    same = {f"A{i}": "flowing" for i in range(1, 11)}
    one_off = {**same, "A1": "agglutinated"}
    for candidate in (same, one_off, same):
        assert tally.decision() == "continue"
        tally.add(same, candidate, current_ms=40.0, candidate_ms=44.0,
                  current_needs_review=False, candidate_needs_review=False)  # fmt: skip
    assert tally.agreement == pytest.approx(29 / 30) and tally.decision() == "switch"
    report = tally.report("switched", at=datetime.now(timezone.utc))
    assert (report.shadow_plates, report.current_ms, report.candidate_ms) == (3, 40.0, 44.0)
    assert report.agreement == round(29 / 30, 6) and report.needs_review_rate == 0.0
    with pytest.raises(ValueError, match="same wells"):
        tally.add(same, {"A1": "flowing"}, current_ms=1, candidate_ms=1,
                  current_needs_review=False, candidate_needs_review=False)  # fmt: skip


def test_shadow_tally_rolls_back_on_a_review_jump_and_switches_when_confirmed() -> None:
    from core.rollout import ShadowTally

    jumpy = ShadowTally(_notice(shadow_plates=20))
    wells = {"A1": "flowing"}
    jumpy.add(wells, wells, current_ms=1, candidate_ms=1,
              current_needs_review=False, candidate_needs_review=True)  # fmt: skip
    assert jumpy.decision() == "rollback"
    confirmed = ShadowTally(_notice(switch_confirmed=True, agreement_threshold=1.0))
    for _ in range(3):
        confirmed.add(wells, {"A1": "invalid"}, current_ms=1, candidate_ms=1,
                      current_needs_review=False, candidate_needs_review=False)  # fmt: skip
    assert confirmed.agreement == 0.0 and confirmed.decision() == "switch"
    confirmed.add(wells, wells, current_ms=1, candidate_ms=1,
                  current_needs_review=False, candidate_needs_review=True)  # fmt: skip
    assert confirmed.decision() == "rollback"  # 1 of 4 held: a jump even when confirmed


def test_versions_rank_by_semantic_version_precedence() -> None:
    ranked = [
        "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
        "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "2.4.0", "2.10.0", "10.0.0",
    ]  # fmt: skip
    for shuffled in (ranked[::-1], ranked[1::2] + ranked[::2]):
        assert sorted(shuffled, key=version_order) == ranked
    assert is_newer("2.10.0", "2.4.0") and not is_newer("2.4.0", "2.10.0")
    # the same release, whatever its build metadata, is not newer: it cannot be taken twice
    assert not is_newer("2.4.0", "2.4.0") and not is_newer("2.4.0+rebuild", "2.4.0")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "2.4",
        "v2.4.0",
        "2.4.0-",
        "2.4.0-rc..1",
        "2.4.0\x00",
        "2.4.0\n",
        "1." * 40 + "0",
        "2.4.0 ",
    ],
)
def test_what_is_not_a_release_version_is_refused_not_ranked(bad: str) -> None:
    with pytest.raises(ValueError, match="not a release version"):
        version_order(bad)
