"""The runtime settings service and the store's write lock: a settings change and a plate's
commit at the same moment must both finish.

A plate's commit holds the store's write lock and reads the runtime settings (the CSV
template, the protective titre); a supervisor's change stores the new settings. The schema
fuzzer once hung the appliance for five minutes here: the change held the settings lock while
it waited for the write lock, and the commit held the write lock while it waited for the
settings lock."""

from __future__ import annotations

import threading
import time

from edge.config import EdgeSettings
from edge.db.store import Store
from edge.schemas import RuntimeSettingsPatch
from edge.services.runtime import RuntimeSettingsService


def test_a_settings_change_during_a_commit_does_not_deadlock(store: Store) -> None:
    runtime = RuntimeSettingsService(EdgeSettings(), store)
    runtime.load()
    updated = threading.Event()

    def change() -> None:
        runtime.update(RuntimeSettingsPatch(protective_titre=40), actor="supervisor:test")
        updated.set()

    with store.write():  # a plate's commit holds the write lock ...
        changer = threading.Thread(target=change, daemon=True)
        changer.start()
        time.sleep(0.2)  # ... while the change waits for it
        reader: list[object] = []
        getter = threading.Thread(target=lambda: reader.append(runtime.get()), daemon=True)
        getter.start()  # ... and the commit reads the settings
        getter.join(timeout=5)
        assert not getter.is_alive(), "reading the settings inside a commit blocked"
        assert reader and getattr(reader[0], "protective_titre", None) != 40  # not yet stored
    assert updated.wait(timeout=5), "the settings change never finished"
    assert runtime.get().protective_titre == 40


def test_concurrent_changes_are_each_stored(store: Store) -> None:
    runtime = RuntimeSettingsService(EdgeSettings(), store)
    runtime.load()
    patches = [RuntimeSettingsPatch(protective_titre=t) for t in (20, 40, 80, 160)]
    patches += [RuntimeSettingsPatch(start_dilution=d) for d in (8, 16)]
    threads = [
        threading.Thread(target=runtime.update, args=(p, "supervisor:test")) for p in patches
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    current = runtime.get()
    # Serialised updates: neither field's change is lost to the other's read-modify-write.
    assert current.start_dilution in (8, 16)
    assert current.protective_titre in (20, 40, 80, 160)
    fresh = RuntimeSettingsService(EdgeSettings(), store)
    fresh.load()
    assert fresh.get() == current
