"""The monitoring role's rules and dashboards, checked with promtool and against the code:
promtool check rules, one promtool unit test per alert, runbooks present, dashboards valid
PromQL, and every metric name they use exported by the code (a rename fails here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.ops.monitoring.rules import (
    EXTERNAL,
    PENDING,
    ROLE,
    dashboard_exprs,
    dashboards,
    defaults,
    exported_names,
    metric_names,
    render,
    require_promtool,
    rule_groups,
)

UNIT_TESTS = Path(__file__).parent / "monitoring/alerts.test.yml"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def alerts() -> list[dict[str, object]]:
    return [r for g in rule_groups(render("microplate.rules.yml.j2")) for r in g["rules"]]


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render("microplate.rules.yml.j2"))
    proc = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in proc.stdout


def test_each_alert_fires_and_stays_silent_in_its_unit_test(tmp_path: Path) -> None:
    # Keep only the summary: promtool compares every annotation, and the runbooks are prose.
    groups = rule_groups(render("microplate.rules.yml.j2"))
    for group in groups:
        for rule in group["rules"]:
            rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    (tmp_path / "microplate.rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(UNIT_TESTS, tmp_path / "alerts.test.yml")
    proc = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [c for t in cases for c in t["alert_rule_test"]]
    for rule in alerts():
        name = rule["alert"]
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays silent"


def test_every_alert_has_a_runbook_and_a_severity() -> None:
    for rule in alerts():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert len(annotations.get("runbook", "")) > 30, rule["alert"]
        assert annotations.get("summary"), rule["alert"]
        assert rule["labels"] in ({"severity": "warning"}, {"severity": "critical"})


def test_thresholds_come_from_the_role_defaults() -> None:
    text = render("microplate.rules.yml.j2", microplate_monitoring_offline_minutes=7)
    offline = next(
        r for g in rule_groups(text) for r in g["rules"] if r["alert"] == "MicroplateDeviceOffline"
    )
    assert "> 420" in offline["expr"]
    assert defaults()["microplate_monitoring_offline_minutes"] * 60 != 420


def test_dashboards_are_provisionable_and_their_queries_parse(tmp_path: Path) -> None:
    found = dashboards()
    assert sorted(found) == sorted(defaults()["microplate_monitoring_dashboards"])
    uids = [d["uid"] for d in found.values()]
    assert len(set(uids)) == len(uids)
    records = []
    for name, dash in found.items():
        assert dash["title"].startswith("Microplate"), name
        ids = [p["id"] for p in dash["panels"]]
        assert len(set(ids)) == len(ids) and ids, name
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == "microplate-prometheus", (name, panel["title"])
            assert (
                panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            )
            assert panel["targets"], (name, panel["title"])
        for expr in dashboard_exprs(dash):
            concrete = expr.replace("$site", "lab1").replace("$device", "reader-01")
            records.append({"record": f"dashboard:check:{len(records)}", "expr": concrete})
    rules = {"groups": [{"name": "dashboards", "rules": records}]}
    (tmp_path / "dash.yml").write_text(yaml.safe_dump(rules))
    proc = promtool("check", "rules", "dash.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_metric_name_used_is_exported_by_the_code() -> None:
    exported = exported_names()
    used: dict[str, set[str]] = {}
    for rule in alerts():
        for name in metric_names(str(rule["expr"])):
            used.setdefault(name, set()).add(str(rule["alert"]))
    for file, dash in dashboards().items():
        for expr in dashboard_exprs(dash):
            for name in metric_names(expr):
                used.setdefault(name, set()).add(file)
    assert "microplate_outbox_oldest_age_seconds" in used  # the extractor found names at all
    unknown = {
        name: sorted(where)
        for name, where in used.items()
        if name not in exported and name not in EXTERNAL and name not in PENDING
    }
    assert not unknown, f"metric names no code exports (renamed?): {unknown}"
    assert not set(PENDING) & exported, "a pending metric now exists: remove it from PENDING"


def test_the_name_check_catches_a_renamed_metric() -> None:
    names = metric_names(
        'sum by (site) (rate(microplate_runz_total{status="done"}[5m])) / on (site) up'
    )
    assert names == {"microplate_runz_total", "up"}
    assert "microplate_runz_total" not in exported_names()


def test_role_templates_reference_only_files_that_exist() -> None:
    tasks = (ROLE / "tasks/main.yml").read_text() + (ROLE / "tasks/grafana.yml").read_text()
    for template in ("prometheus.yml.j2", "microplate.rules.yml.j2", "blackbox.yml.j2"):
        assert template in tasks and (ROLE / "templates" / template).is_file()
