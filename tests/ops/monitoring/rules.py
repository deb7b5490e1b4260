"""Helpers for the monitoring tests: render the role's rules, read the dashboards, and list the
metric names the code exports and the names PromQL expressions use."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "ansible/roles/microplate_monitoring"
DASHBOARDS = ROLE / "files/dashboards"
PROMTOOL = shutil.which("promtool")

# Names the rules and dashboards use that other software exports (checked by hand against the
# version named; not our code, so a rename there is caught by the exporter's release notes).
EXTERNAL = {
    "up": "Prometheus itself (scrape health)",
    "pg_up": "prometheus-postgres-exporter (Debian 12: 0.11)",
    "pg_stat_database_numbackends": "prometheus-postgres-exporter",
    "probe_success": "prometheus-blackbox-exporter",
    "probe_ssl_earliest_cert_expiry": "prometheus-blackbox-exporter",
    "litestream_sync_count": "Litestream 0.5.17 (read from its /metrics)",
    "litestream_sync_error_count": "Litestream 0.5.17 (read from its /metrics)",
}
# THE one place for metrics the rules need before the code exports them: name -> who adds it.
# A name listed here must really be missing (the test fails once it exists, so it is removed).
# The needs_review alert uses the existing microplate_runs_total with status="needs_review":
# the metric exists; the label value arrives with the quality gate (reader-edge, issue 15).
PENDING: dict[str, str] = {}

FUNCTIONS = {
    "sum", "max", "min", "avg", "count", "topk", "bottomk", "rate", "increase", "irate",
    "time", "histogram_quantile", "and", "or", "unless", "changes", "abs", "clamp_min",
}  # fmt: skip


def require_promtool() -> str:
    if PROMTOOL is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing: .ci/run installs the prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return PROMTOOL


def defaults() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    return data


def render(template: str, **overrides: Any) -> str:
    """Render one of the role's templates the way Ansible does (trim_blocks), with its defaults."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template(template).render({**defaults(), "ansible_managed": "test", **overrides})


def rule_groups(text: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(text)["groups"]
    return groups


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        match = re.match(r"label_values\((.*),\s*\w+\)$", var["definition"])
        assert match, var["definition"]
        exprs.append(match.group(1))
    return exprs


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (what is left once strings, matchers, ranges,
    grouping clauses, numbers and function names are removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text))
    return names - FUNCTIONS


def exported_names() -> set[str]:
    """Every sample name the code can export, read from its metric definitions."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import Metric

    import cloud.app  # noqa: F401  (registers the API's metrics in the default registry)
    from cloud.fleet_metrics import FleetCollector
    from cloud.ingest.metrics import IngestCollector
    from edge.metrics import Metrics

    families: list[Metric] = [
        *Metrics().registry.collect(),
        *REGISTRY.collect(),
        *IngestCollector(None).describe(),  # type: ignore[arg-type]
        *FleetCollector(None).describe(),
    ]
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
    }
    names: set[str] = set()
    for family in families:
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names
