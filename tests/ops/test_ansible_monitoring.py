"""What the monitoring role rendered in the real Ansible run (tests/ops/provision.py): promtool
accepts the Prometheus configuration and its rules, every ingest worker and the appliance are
scraped, and the appliances' metrics token stays out of the configuration."""

from __future__ import annotations

import stat
import subprocess

import pytest
import yaml

from tests.ops.monitoring.rules import require_promtool
from tests.ops.provision import PLAYBOOK, Provisioned

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PLAYBOOK is None, reason="ansible-core not installed (dev extra)"),
]


def test_promtool_accepts_the_rendered_config(provisioned: Provisioned) -> None:
    config = provisioned.root / "etc/prometheus/prometheus.yml"
    proc = subprocess.run(
        [require_promtool(), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_worker_and_the_appliance_are_scraped(provisioned: Provisioned) -> None:
    root = provisioned.root
    config = yaml.safe_load((root / "etc/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    ingest = jobs["microplate_ingest"]["static_configs"][0]["targets"]
    assert ingest == ["127.0.0.1:9411", "127.0.0.1:9412"]  # microplate_cloud_ingest_workers: 2
    edge = jobs["microplate_edge"]
    assert edge["static_configs"][0]["targets"] == ["reader-01.lab.example.org:8443"]
    assert edge["static_configs"][0]["labels"]["__scheme__"] == "https"
    token_file = root / "etc/prometheus/edge-metrics-token"
    assert edge["authorization"]["credentials_file"] == str(token_file)
    assert token_file.read_text() == "edge-metrics-token-0c3a"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o640
    assert "edge-metrics-token-0c3a" not in (root / "etc/prometheus/prometheus.yml").read_text()
    # The cloud API's /metrics needs the cloud's generated token: Prometheus reads its own copy.
    api_token = root / "etc/prometheus/api-metrics-token"
    api = jobs["microplate_api"]
    assert api["authorization"]["credentials_file"] == str(api_token)
    cloud_token = (root / "etc/microplate/credentials/metrics_token").read_text()
    assert len(cloud_token) >= 32 and api_token.read_text() == cloud_token
    assert stat.S_IMODE(api_token.stat().st_mode) == 0o640
    assert cloud_token not in (root / "etc/prometheus/prometheus.yml").read_text()
    assert jobs["microplate_litestream"]["static_configs"][0]["labels"]["device"] == "reader-01"
    # The appliance's side of that target: Litestream serves its metrics.
    litestream = yaml.safe_load((root / "etc/microplate/credentials/litestream.yml").read_text())
    assert litestream["addr"] == "127.0.0.1:9091"
    assert (root / "etc/prometheus/rules/microplate.rules.yml").is_file()
    assert "--storage.tsdb.retention.time=30d" in (root / "etc/default/prometheus").read_text()
