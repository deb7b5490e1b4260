"""Model updates over the air: download, verify, load, shadow, then switch or roll back.

The cloud announces a release with a retained `core.rollout.ModelNotice` on the device's `model`
topic (handed in by the sync worker through `notice()`). This service's own thread then:

1. fetches the offer (`GET /api/v1/device/model`: signed manifest and presigned URLs) and
   checks the manifest is the one the notice names (its sha256) and signed by the key Ansible
   installed (`ota.public_key_file`) before a single model byte is fetched, and refuses
   (`downgrade`) a release whose version is not newer than both the model in force and the
   newest version ever switched to (kept in the state file): a signed release stays valid for
   good, so an old or known-bad one replayed by whoever controls the broker or the cloud is
   never loaded again; going back means publishing the older weights under a higher version;
2. downloads every file into `data_dir/ota/staging/{assignment}/`, streamed, never more than
   the manifest's size, resumed after a cut (`ota.download_attempts` tries per file);
3. runs `core.ota.verify_artefact` on the whole release: a wrong key or signature, a release
   for another plate format, a missing, cut or changed file is **refused** (reported with its
   reason) and deleted;
4. writes the classifier manifest the loader reads (the running classifier's input and classes,
   the release's files, name and version), moves the release to `data_dir/ota/models/` and
   loads it through the same path as the shipped model (ONNX Runtime, or TensorRT with the
   engine cache); a load or engine build that fails is reported `failed` and deleted;
5. **shadows** it: on the next `shadow_plates` plates read by the classifier, the candidate
   reads the same frame after the model in force (`shadow_read`, on the read thread); only the
   first read counts. Agreement (same state, well by well), time per plate and needs-review
   rate of both are tallied (`core.rollout.ShadowTally`) and its decision
   (`core.rollout.shadow_decision`) is taken after each plate: a
   needs-review rate that jumps rolls back at once; after the shadow plates, the wells must
   agree at least `agreement_threshold` (or the admin confirmed the switch);
6. on **switch** the candidate becomes the classifier in force, and the state file
   (`data_dir/ota/state.json`, written atomically with fsync) names it so a restart keeps it;
   on **rollback** it is closed and deleted. Nothing changes for the model in force until the
   switch, and a failed step never touches it.

Every step is reported with `core.rollout.ModelReport` (`downloaded`, `refused`, `shadowing`,
`switched`, `rolled_back`, `failed`); reports wait in the state file and are retried with a
capped back-off while the cloud is unreachable, in order. An empty retained message (the cloud
withdrew the notice) drops a candidate not yet switched to. An assignment that ended is not
started again when its retained notice is delivered again after a reconnect.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.ota import (
    MAX_MANIFEST_BYTES,
    ArtefactError,
    ModelManifest,
    is_newer,
    load_public_key,
    parse_signed,
    verify_artefact,
    verify_manifest,
    version_order,
)
from core.rollout import ModelNotice, ModelReport, ReportState, ShadowTally, parse_notice
from edge.ports import CloudError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edge.config import OtaSettings
    from edge.detect.plate import PlateResult
    from edge.ports import ClassifierSlot, ModelCloud

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
MAX_ENDED = 100  # ended assignments remembered (a retained notice is only ever the newest)


class _Later(Exception):
    """The cloud is unreachable: try this notice again after a back-off."""


class _Refused(Exception):
    def __init__(self, state: ReportState, reason: str) -> None:
        super().__init__(reason)
        self.state: ReportState = state
        self.reason = reason


_COUNTS = (
    "plates", "wells", "agreeing", "current_ms", "candidate_ms", "current_held", "candidate_held",
)  # fmt: skip


@dataclass
class Candidate:
    """The release being shadowed: its notice (the newest revision), folder and tally."""

    notice: ModelNotice
    directory: str = ""
    tally: ShadowTally = field(init=False)

    def __post_init__(self) -> None:
        self.tally = ShadowTally(self.notice)

    @classmethod
    def of(cls, notice: ModelNotice) -> Candidate:
        return cls(notice)

    @property
    def assignment_id(self) -> str:
        return str(self.notice.assignment_id)

    @property
    def name(self) -> str:
        return self.notice.name

    @property
    def version(self) -> str:
        return self.notice.version

    def confirm(self, notice: ModelNotice) -> None:
        """A newer revision of the same assignment (the admin confirmed the switch)."""
        self.notice = notice
        self.tally.notice = notice

    def rates(self) -> tuple[float, float]:
        n = max(self.tally.plates, 1)
        return self.tally.current_held / n, self.tally.candidate_held / n

    def to_json(self) -> dict[str, Any]:
        return {
            "notice": json.loads(self.notice.model_dump_json()),
            "directory": self.directory,
            "tally": {k: getattr(self.tally, k) for k in _COUNTS},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Candidate:
        cand = cls(ModelNotice.model_validate(doc["notice"]), str(doc.get("directory", "")))
        for key, value in dict(doc.get("tally", {})).items():
            if key in _COUNTS:
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise TypeError(f"tally.{key}: not a number")
                setattr(cand.tally, key, value)
        return cand


def _now() -> datetime:
    return datetime.now(timezone.utc)


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write `doc` to `path`: hidden temporary file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class OtaState:
    """`data_dir/ota/state.json`: the model switched to, the candidate, ended assignments and
    the reports not yet delivered. Unreadable: started afresh (logged), the configured model
    reads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / STATE_FILE
        self.active: dict[str, Any] | None = None
        self.candidate: Candidate | None = None
        self.ended: dict[str, str] = {}  # assignment id -> its last state
        self.reports: list[dict[str, Any]] = []
        # the newest version ever switched to: a release must be newer (anti-rollback), even
        # after the engineer points the appliance back at an older model folder
        self.highest: str | None = None
        self.load()

    def load(self) -> None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.error("model update state %s unreadable (%s); starting afresh", self.path, exc)
            return
        if not isinstance(doc, dict):
            logger.error("model update state %s is not an object; starting afresh", self.path)
            return
        # Each part is checked on its own: a part of the wrong shape is dropped (logged), the
        # configured model reads, and nothing here may stop the appliance from starting.
        active = doc.get("active")
        if active is not None and not _valid_active(active):
            logger.error("model update state: the model in force is unreadable; ignored")
            active = None
        self.active = active
        cand = doc.get("candidate")
        try:
            self.candidate = Candidate.from_json(dict(cand)) if cand else None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            logger.error("model update state: the candidate is unreadable (%s); dropped", exc)
        highest = doc.get("highest")
        if highest is not None:
            try:
                version_order(str(highest))
                self.highest = str(highest)
            except ValueError:
                logger.error("model update state: the newest version switched to is unreadable")
        ended = doc.get("ended", {})
        if isinstance(ended, dict):
            self.ended = {str(k): str(v) for k, v in ended.items()}
        reports = doc.get("reports", [])
        for report in reports if isinstance(reports, list) else []:
            try:
                ModelReport.model_validate(report)
            except ValueError:
                logger.error("model update state: a stored report is unreadable; dropped")
                continue
            self.reports.append(dict(report))

    def save(self) -> None:
        doc = {
            "active": self.active,
            "candidate": self.candidate.to_json() if self.candidate else None,
            "ended": self.ended,
            "reports": self.reports,
            "highest": self.highest,
        }
        write_json_atomic(self.path, doc)

    def active_dir(self) -> Path | None:
        """The classifier folder a switch made the one in force, if any."""
        if not self.active or not self.active.get("directory"):
            return None
        return Path(self.active["directory"])


def _valid_active(doc: Any) -> bool:
    """The model in force as `OtaService` writes it: an object of strings naming its folder."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("directory"), str)
        and all(isinstance(doc.get(k), str) for k in ("name", "version"))
    )


def report_reason(reason: str | None) -> str | None:
    """A reason as a report carries it: control characters escaped (it may quote what a
    server sent), at most 500 characters (`ModelReport.reason`)."""
    if reason is None or reason.isprintable():
        return None if reason is None else reason[:500]
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in reason)[:500]


def wells_manifest(running: dict[str, Any], release: ModelManifest) -> dict[str, Any]:
    """The classifier manifest for a release: input and classes of the running classifier
    (a fine-tune of it), files, name and version from the signed release."""
    modes: dict[str, Any] = {}
    for mode, spec in running["modes"].items():
        files: dict[str, Any] = {}
        for f in release.files:
            if f.mode == mode and f.precision in ("fp32", "int8") and f.precision not in files:
                files[f.precision] = {"path": f.path, "sha256": f.sha256}
        if "fp32" not in files:
            raise _Refused("failed", f"the release has no fp32 file for the {mode} reading mode")
        modes[mode] = {"classes": list(spec["classes"]), "files": files}
    return {
        "name": release.name,
        "version": release.version,
        "task": "well-classification",
        "input": running["input"],
        "output": running.get("output", {"name": "probs"}),
        "modes": modes,
        "metrics": dict(release.metrics),
    }


class OtaService:
    """See the module docstring. `cloud` is None until sync is configured (`start`)."""

    def __init__(
        self,
        settings: OtaSettings,
        state: OtaState,
        slot: ClassifierSlot,
        *,
        plate_format: Callable[[], int],
        disk_floor: Callable[[], int] = lambda: 0,
        events: Any | None = None,
    ) -> None:
        self._settings = settings
        self.state = state
        self.folder = state.folder
        self._slot = slot
        self._plate_format = plate_format
        self._disk_floor = disk_floor
        self._events = events
        self._cloud: ModelCloud | None = None
        self._lock = threading.RLock()  # state
        self._use = threading.Lock()  # the candidate classifier: held while it reads a plate
        self._classifier: Any | None = None
        self._notices: queue.Queue[ModelNotice | None] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._pending: ModelNotice | None = None
        self._mismatches = 0
        self.step = "idle"  # what it is doing now, for the status page
        self.last: dict[str, Any] | None = None  # the last step reported
        self._key_problem = ""
        self._key: Ed25519PublicKey | None = None
        self._load_key()

    # -- settings ------------------------------------------------------------------------
    def _load_key(self) -> None:
        s = self._settings
        if not s.enabled:
            self._key_problem = "model updates are switched off (ota.enabled)"
            return
        if s.public_key_file is None:
            self._key_problem = (
                "no model signing key: set ota.public_key_file (Ansible "
                "microplate_edge_model_public_key); updates are refused"
            )
            return
        try:
            self._key = load_public_key(s.public_key_file.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._key_problem = f"the model signing key {s.public_key_file} is unusable ({exc})"

    @property
    def disabled(self) -> str:
        """Why updates are not taken ("" when they are)."""
        if self._key_problem:
            return self._key_problem
        if self._cloud is None:
            return "model updates need sync with sync.api_base_url and a device token"
        return ""

    # -- lifecycle -----------------------------------------------------------------------
    def active_dir(self) -> Path | None:
        return self.state.active_dir()

    def start(self, cloud: ModelCloud | None) -> None:
        """Start the thread; resume a candidate that was shadowing when the appliance
        stopped (verified and loaded again)."""
        self._cloud = cloud
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ota", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._use:
            if self._classifier is not None:
                self._classifier.close()
                self._classifier = None
        close = getattr(self._cloud, "close", None)
        if callable(close):
            close()
        self._cloud = None

    # -- from the MQTT thread: hand over, never block ------------------------------------
    def notice(self, payload: bytes) -> None:
        if not payload.strip():
            self._notices.put(None)  # the cloud withdrew its notice
        else:
            try:
                self._notices.put(parse_notice(payload))
            except ValueError as exc:
                logger.warning("ignoring a malformed model notice: %s", exc)
                return
        self._wake.set()

    # -- the thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        self._resume()
        while not self._stop.is_set():
            try:
                self._round()
            except Exception:
                logger.exception("model update round failed; retrying")
                self._stop.wait(1.0)
            self._wake.wait(self._wait())
            self._wake.clear()

    def _wait(self) -> float:
        if self._cloud is not None and (self.state.reports or self._pending is not None):
            return max(0.05, self._retry_at - time.monotonic())
        return 30.0

    def _round(self) -> None:
        while True:
            try:
                notice = self._notices.get_nowait()
            except queue.Empty:
                break
            self._pending = None
            if notice is None:
                self._withdrawn()
            else:
                self._pending = notice
        if time.monotonic() < self._retry_at:
            return
        try:
            if self._pending is not None:
                notice, self._pending = self._pending, None
                try:
                    self._take(notice)
                except _Later:
                    self._pending = notice
                    raise
            self._send_reports()
        except _Later:
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._settings.retry_max_s)
            return
        self._backoff = 1.0

    # -- a notice ------------------------------------------------------------------------
    def _take(self, notice: ModelNotice) -> None:
        aid = str(notice.assignment_id)
        if self._cloud is None:
            logger.info("model notice for %s ignored: %s", notice.version, self.disabled)
            return
        with self._lock:
            cand = self.state.candidate
            if aid in self.state.ended:
                return  # delivered again after a reconnect: it ended already
            if cand is not None and cand.assignment_id == aid:
                if notice.switch_confirmed and not cand.notice.switch_confirmed:
                    cand.confirm(notice)
                    self.state.save()
                    logger.info("the admin confirmed the switch to %s", cand.version)
                return
        active = self.state.active
        if active and active.get("manifest_sha256") == notice.manifest_sha256:
            self._end(Candidate.of(notice), "switched", None)  # already running it
            return
        if self.disabled:
            self._end(Candidate.of(notice), "refused", self.disabled)
            return
        if cand is not None:
            self._drop("superseded by " + notice.version)
        new = Candidate.of(notice)
        try:
            self._fetch_and_load(new)
        except _Refused as exc:
            self._end(new, exc.state, exc.reason)
            self._discard_download(new)
        except _Later:
            self._set_step(f"waiting for the cloud ({notice.name} {notice.version})")
            raise
        except OSError as exc:  # the disk filled up, or the data folder is unwritable
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            reason = f"disk: {exc.strerror or exc}" if full else f"io: {exc}"
            with self._use:  # a candidate loaded before its state could be saved: not kept
                if self.state.candidate is new:
                    if self._classifier is not None:
                        self._classifier.close()
                        self._classifier = None
                    self.state.candidate = None
            # what was downloaded goes first: the report is saved to the same disk
            self._discard_download(new)
            self._end(new, "refused" if full else "failed", reason)

    def _fetch_and_load(self, cand: Candidate) -> None:
        assert self._cloud is not None and self._key is not None
        cloud = self._cloud
        self._set_step(f"downloading {cand.name} {cand.version}")
        try:
            offer = cloud.offer()
            offered = str(offer.notice.assignment_id)
        except CloudError as exc:
            if exc.status != 404:
                raise self._cloud_error(exc, "the offer") from None
            offered = ""  # nothing recorded as sent to us yet
        if offered != cand.assignment_id:
            # The cloud records a notice as sent once the broker acknowledged it, which may be
            # just after we heard it: ask again a little later (a newer notice replaces this).
            self._mismatches += 1
            if self._mismatches > 10:
                logger.warning(
                    "the cloud does not offer assignment %s; ignored", cand.assignment_id
                )
                return
            logger.info("the cloud does not offer assignment %s yet", cand.assignment_id)
            raise _Later()
        self._mismatches = 0
        staging = self.folder / "staging" / cand.assignment_id
        staging.mkdir(parents=True, exist_ok=True)
        manifest_path = staging / "manifest.signed.json"
        manifest_path.unlink(missing_ok=True)  # small, and its size is not known: fetch whole
        self._download(offer.manifest_url, manifest_path, MAX_MANIFEST_BYTES, exact=False)
        manifest_bytes = manifest_path.read_bytes()
        try:
            signed = parse_signed(manifest_bytes)
            if signed.sha256 != cand.notice.manifest_sha256:
                raise ArtefactError("tampered", "the manifest is not the one the notice names")
            manifest = verify_manifest(signed, self._key)
        except ArtefactError as exc:
            raise _Refused("refused", str(exc)) from None
        named = (cand.notice.name, cand.notice.version)
        if (manifest.name, manifest.version) != named:
            raise _Refused(
                "refused",
                f"tampered: the manifest is {manifest.name} {manifest.version}, the notice "
                f"names {named[0]} {named[1]}",
            )
        running = self._slot.classifier_manifest()
        if running is not None and running.get("name") != manifest.name:
            raise _Refused(
                "refused",
                f"model: the release is {manifest.name}, this appliance's well classifier is "
                f"{str(running.get('name'))[:64]} (a release fine-tunes the model in force)",
            )
        floor = self._version_floor(running)
        if floor is not None and not is_newer(manifest.version, floor):
            raise _Refused(
                "refused",
                f"downgrade: {manifest.version} is not newer than {floor} (the model in force "
                "or the newest switched to); a signed release is never taken twice or "
                "backwards: publish the wanted weights under a higher version",
            )
        total = sum(f.size_bytes for f in manifest.files)
        if total > self._settings.max_download_mb * 1024 * 1024:
            raise _Refused(
                "refused",
                f"too_large: {total} bytes, over ota.max_download_mb "
                f"({self._settings.max_download_mb})",
            )
        free = shutil.disk_usage(staging).free
        if free - total < self._disk_floor():
            raise _Refused(
                "refused",
                f"disk: {free // 2**20} MB free, the release needs {total // 2**20} MB and "
                f"{self._disk_floor() // 2**20} MB stay free for plates (retention.disk_floor_mb)",
            )
        urls = {f.path: f.url for f in offer.files}
        for entry in manifest.files:
            url = urls.get(entry.path)
            if url is None:
                raise _Refused("refused", f"missing_file: the offer has no URL for {entry.path}")
            self._download(url, staging / entry.path, entry.size_bytes)
        self._set_step(f"verifying {cand.name} {cand.version}")
        try:
            verify_artefact(
                manifest_bytes, staging, public_key=self._key, plate_format=self._plate_format()
            )
        except ArtefactError as exc:
            raise _Refused("refused", str(exc)) from None
        self._report(cand, "downloaded")
        running = self._slot.classifier_manifest()
        if running is None:
            raise _Refused(
                "failed",
                "this appliance reads plates with the detector: no well classifier "
                "to shadow (set detector.wells_model_dir)",
            )
        (staging / "manifest.json").write_text(
            json.dumps(wells_manifest(running, manifest), indent=2), encoding="utf-8"
        )
        target = self.folder / "models" / f"{manifest.name}-{manifest.version}-{signed.sha256[:8]}"
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        cand.directory = str(target)
        self._set_step(f"loading {cand.name} {cand.version}")
        self._load(cand)
        with self._lock:
            self.state.candidate = cand
            self.state.save()
        self._report(cand, "shadowing")
        self._set_step(f"shadowing {cand.name} {cand.version}")

    def _version_floor(self, running: dict[str, Any] | None) -> str | None:
        """The version a release must be newer than: the newest of the model in force and
        every version switched to before (None when neither is known)."""
        known = [self.state.highest]
        if running is not None:
            known.append(str(running.get("version", "")))
        versions = []
        for version in known:
            if not version:
                continue
            try:
                versions.append((version_order(version), version))
            except ValueError:  # a hand-made model folder with a free-form version
                logger.warning("model version %r is not a release version; not compared", version)
        return max(versions)[1] if versions else None

    def _load(self, cand: Candidate) -> None:
        try:
            classifier = self._slot.load_classifier(Path(cand.directory))
        except Exception as exc:  # noqa: BLE001 - any backend error: the candidate failed
            logger.warning("model %s %s does not load: %s", cand.name, cand.version, exc)
            raise _Refused("failed", f"load: {str(exc)[:400]}") from None
        with self._use:
            self._classifier = classifier

    def _download(self, url: str, dest: Path, limit: int, *, exact: bool = True) -> None:
        """Fetch `url` into `dest`, resuming after a cut, up to `download_attempts` tries;
        `exact`: `limit` is the file's size (done when it is there), else only a cap."""
        assert self._cloud is not None
        attempts = self._settings.download_attempts
        for attempt in range(1, attempts + 1):
            try:
                size = self._cloud.download(url, dest, limit=limit)
            except CloudError as exc:
                if not exc.retry:
                    raise _Refused("refused", f"download {dest.name}: {exc}") from None
                got = dest.stat().st_size if dest.exists() else 0
                if got == 0 and attempt == attempts:
                    raise _Later() from None  # nothing came: the cloud is unreachable
                logger.info("download of %s broke off (%s); attempt %d", dest.name, exc, attempt)
                continue
            if size >= limit or not exact:
                return
        # Cut every time: verify_artefact says `truncated` and the release is refused.

    def _discard_download(self, cand: Candidate) -> None:
        """Delete what a refused or failed download left (its staging and release folders)."""
        shutil.rmtree(self.folder / "staging" / cand.assignment_id, ignore_errors=True)
        self._remove_release(cand.directory)
        self._set_step("idle")

    def _remove_release(self, directory: str) -> None:
        """Delete a release folder, only ever under `data_dir/ota/models` (the folder names
        come from the state file: one that was edited or corrupted must not delete elsewhere)."""
        if not directory:
            return
        models = (self.folder / "models").resolve()
        path = Path(directory).resolve()
        if path.parent != models:
            logger.warning("not deleting %s: not a release folder under %s", directory, models)
            return
        shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _cloud_error(exc: CloudError, what: str) -> Exception:
        if exc.retry:
            logger.info("model update: %s: %s; trying again later", what, exc)
            return _Later()
        return _Refused("refused", f"{what}: {exc}")

    def _resume(self) -> None:
        cand = self.state.candidate
        if cand is None:
            return
        try:
            if self._key is None:
                raise _Refused("failed", self._key_problem)
            directory = Path(cand.directory)
            verify_artefact(
                (directory / "manifest.signed.json").read_bytes(),
                directory,
                public_key=self._key,
                plate_format=self._plate_format(),
            )
            self._load(cand)
            self._set_step(f"shadowing {cand.name} {cand.version}")
            logger.info("resumed shadowing %s %s", cand.name, cand.version)
        except (OSError, ArtefactError, _Refused) as exc:
            reason = exc.reason if isinstance(exc, _Refused) else str(exc)
            with self._lock:
                self.state.candidate = None
            self._remove_release(cand.directory)
            self._end(cand, "failed", f"after a restart: {reason}"[:500])

    # -- the shadow (read thread) ----------------------------------------------------------
    def shadow_read(
        self, read: Callable[[Any], PlateResult], current: PlateResult, current_ms: float
    ) -> None:
        with self._use:
            classifier = self._classifier
            cand = self.state.candidate
            if classifier is None or cand is None:
                return
            t0 = time.perf_counter()
            try:
                theirs = read(classifier)
            except Exception as exc:  # noqa: BLE001 - the candidate's fault, never the plate's
                logger.warning("the candidate %s failed to read a plate: %s", cand.version, exc)
                self._rollback_locked(cand, f"the candidate failed to read a plate: {exc}"[:500])
                return
            cand_ms = (time.perf_counter() - t0) * 1e3
            with self._lock:
                tally = cand.tally
                try:
                    tally.add(
                        {w: c.state for w, c in current.wells.items()},
                        {w: c.state for w, c in theirs.wells.items()},
                        current_ms=current_ms,
                        candidate_ms=cand_ms,
                        current_needs_review=current.needs_review,
                        candidate_needs_review=theirs.needs_review,
                    )
                except ValueError as exc:  # it called other wells than the plate has
                    self._rollback_locked(cand, f"the candidate's read does not fit: {exc}")
                    return
                decision = tally.decision()
                if decision == "continue":
                    # saved (fsync) with each progress report, not every plate: a crash costs
                    # at most a few shadow plates, counted again after the restart
                    every = max(1, cand.notice.shadow_plates // 5)
                    if tally.plates % every == 0:
                        self._report(cand, "shadowing")
                    return
            if decision == "switch":
                self._slot.promote(classifier)
                self._classifier = None
                with self._lock:
                    previous = self.state.active
                    self.state.active = {
                        "name": cand.name,
                        "version": cand.version,
                        "manifest_sha256": cand.notice.manifest_sha256,
                        "assignment_id": cand.assignment_id,
                        "directory": cand.directory,
                        "switched_at": _now().isoformat(),
                    }
                    self.state.candidate = None
                    highest = self.state.highest
                    if highest is None or is_newer(cand.version, highest):
                        self.state.highest = cand.version
                    self._end(cand, "switched", None)
                if previous and previous.get("directory") not in (None, cand.directory):
                    self._remove_release(previous["directory"])
                self._set_step("idle")
                logger.info("switched to %s %s", cand.name, cand.version)
            else:
                cur_rate, cand_rate = cand.rates()
                if cand_rate - cur_rate > 0.10:
                    why = (
                        f"needs_review rate {cand_rate:.2f} against {cur_rate:.2f} for the "
                        f"model in force after {tally.plates} plates"
                    )
                else:
                    why = (
                        f"agreement {tally.agreement:.3f} below "
                        f"{cand.notice.agreement_threshold:.3f} "
                        f"after {tally.plates} plates"
                    )
                self._rollback_locked(cand, why)

    def _rollback_locked(self, cand: Candidate, why: str) -> None:
        """Drop the candidate (the caller holds `_use`) and report the rollback."""
        if self._classifier is not None:
            self._classifier.close()
            self._classifier = None
        with self._lock:
            self.state.candidate = None
            self._end(cand, "rolled_back", why)
        self._remove_release(cand.directory)
        self._set_step("idle")
        logger.warning("rolled back %s %s: %s", cand.name, cand.version, why)

    def _drop(self, why: str) -> None:
        with self._use:
            if self._classifier is not None:
                self._classifier.close()
                self._classifier = None
            with self._lock:
                cand, self.state.candidate = self.state.candidate, None
                if cand is not None:
                    self.state.ended[cand.assignment_id] = "withdrawn"
                    self.state.save()
        if cand is not None:
            self._remove_release(cand.directory)
            logger.info("dropped candidate %s %s: %s", cand.name, cand.version, why)
        self._set_step("idle")

    def _withdrawn(self) -> None:
        if self.state.candidate is not None:
            self._drop("the cloud withdrew its notice")
        # a download that waited for the cloud is not wanted any more either
        shutil.rmtree(self.folder / "staging", ignore_errors=True)

    # -- reports -------------------------------------------------------------------------
    def _end(self, cand: Candidate, state: ReportState, reason: str | None) -> None:
        with self._lock:
            ended = self.state.ended
            ended.pop(cand.assignment_id, None)
            ended[cand.assignment_id] = state
            while len(ended) > MAX_ENDED:  # the oldest first (dicts keep insertion order)
                ended.pop(next(iter(ended)))
            self._report(cand, state, reason)

    def _report(self, cand: Candidate, state: ReportState, reason: str | None = None) -> None:
        reason = report_reason(reason)
        report = cand.tally.report(state, at=_now(), reason=reason)
        with self._lock:
            self.state.reports.append(json.loads(report.model_dump_json()))
            self.state.save()
            self.last = {"version": cand.version, "state": state, "reason": reason}
        logger.info(
            "model %s %s: %s%s", cand.name, cand.version, state, f" ({reason})" if reason else ""
        )
        if self._events is not None:
            self._events.publish("ota.status", self.status())
        self._wake.set()

    def _send_reports(self) -> None:
        if self._cloud is None:
            return
        while True:
            with self._lock:
                if not self.state.reports:
                    return
                doc = self.state.reports[0]
            try:
                self._cloud.report(ModelReport.model_validate(doc))
            except CloudError as exc:
                if exc.retry:
                    raise _Later() from None
                logger.warning("the cloud refused a model report (%s); dropped", exc)
            with self._lock:
                if self.state.reports and self.state.reports[0] is doc:
                    self.state.reports.pop(0)
                    self.state.save()

    # -- status ----------------------------------------------------------------------------
    def _set_step(self, step: str) -> None:
        self.step = step
        if self._events is not None:
            self._events.publish("ota.status", self.status())

    def status(self) -> dict[str, Any]:
        """What the status page and `/api/status` show."""
        with self._lock:
            cand = self.state.candidate
            active = self.state.active
            shadow = None
            if cand is not None:
                t = cand.tally
                shadow = {
                    "name": cand.name,
                    "version": cand.version,
                    "plates": t.plates,
                    "of": cand.notice.shadow_plates,
                    "agreement": round(t.agreement, 4) if t.plates else None,
                    "threshold": cand.notice.agreement_threshold,
                    "loaded": self._classifier is not None,
                }
            return {
                "enabled": not self.disabled,
                "disabled": self.disabled or None,
                "step": self.step,
                "active": (
                    {"name": active["name"], "version": active["version"], "source": "update"}
                    if active
                    else None
                ),
                "shadow": shadow,
                "last": self.last,
                "reports_pending": len(self.state.reports),
            }
