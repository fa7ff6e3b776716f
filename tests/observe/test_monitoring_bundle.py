"""The monitoring bundle: alert rules (checked by promtool when it can be had, and against the rule schema
always), the Grafana dashboard (valid, what its generator writes), and every series both read is one fedkafka
exports. The roles' scrape target template renders to valid file_sd JSON."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring/prometheus/fedkafka-rules.yml"
RULE_TESTS = ROOT / "monitoring/prometheus/fedkafka-rules.test.yml"
DASHBOARD = ROOT / "monitoring/grafana/fedkafka-federation.json"
PROMTOOL_CACHE = Path.home() / ".cache/fedkafka/promtool"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def promtool() -> str | None:
    """promtool from PATH, or from Debian's prometheus package unpacked into ~/.cache/fedkafka (no service is
    installed or started); None when neither can be had."""
    found = shutil.which("promtool") or (PROMTOOL_CACHE / "promtool" if (PROMTOOL_CACHE / "promtool").exists()
                                         else None)
    if found or shutil.which("apt-get") is None:
        return str(found) if found else None
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp, capture_output=True, timeout=300)
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if got.returncode != 0 or not debs:
            return None
        subprocess.run(["dpkg", "-x", str(debs[0]), f"{tmp}/root"], check=True, timeout=120)
        PROMTOOL_CACHE.mkdir(parents=True, exist_ok=True)
        shutil.copy(f"{tmp}/root/usr/bin/promtool", PROMTOOL_CACHE / "promtool")
    return str(PROMTOOL_CACHE / "promtool")


def exported_metric_names() -> set[str]:
    """Every fedkafka_* name a service declares (counters and histograms add their suffixes when exposed)."""
    names = set()
    for path in (ROOT / "fedkafka").rglob("*.py"):
        names |= set(re.findall(r'"(fedkafka_[a-z_]+)"', path.read_text()))
    return names


def read_series(expr: str) -> set[str]:
    return set(re.findall(r"\b(fedkafka_[a-z_]+)\b", expr))


def is_exported(name: str, exported: set[str]) -> bool:
    bases = [name] + [name.removesuffix(s) for s in ("_total", "_bucket", "_sum", "_count") if name.endswith(s)]
    return any(b in exported for b in bases)


# -- alert rules -----------------------------------------------------------------------------------
def test_rules_follow_the_prometheus_rule_schema():
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    names = set()
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"] not in names
        names.add(group["name"])
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert DURATION.match(rule.get("for", "0s")), rule.get("for")
            for key in ("labels", "annotations"):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in rule.get(key, {}).items())
            if "alert" in rule:
                assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", rule["alert"])
                assert rule["labels"]["severity"] in ("warning", "critical")
                assert rule["annotations"]["summary"]


def test_the_named_alerts_exist():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert {"FedkafkaProxyNotOnCurrentView", "FedkafkaClusterUnreachable", "FedkafkaMoveStuck",
            "FedkafkaProduceErrorRate", "FedkafkaNoActiveController"} <= alerts


def test_promtool_checks_the_rules_and_their_unit_tests():
    tool = promtool()
    if tool is None:
        pytest.skip("no promtool (PATH, ~/.cache/fedkafka/promtool, or apt-get download prometheus); "
                    "the schema test above still ran")
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([tool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True,
                          text=True, timeout=120)
    assert unit.returncode == 0, unit.stdout + unit.stderr


# -- dashboard -------------------------------------------------------------------------------------
def _generator():
    spec = importlib.util.spec_from_file_location("build_dashboard", ROOT / "monitoring/grafana/build_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dashboard_is_what_its_generator_writes():
    assert DASHBOARD.read_text() == _generator().render(), "run python monitoring/grafana/build_dashboard.py"


def test_the_dashboard_is_valid_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat") and p["targets"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def test_every_series_the_bundle_reads_is_exported():
    exported = exported_metric_names()
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    unknown = {name for e in exprs for name in read_series(e) if not is_exported(name, exported)}
    assert not unknown


def test_the_scrape_target_template_renders_file_sd_json():
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()
    env.filters["to_json"] = json.dumps
    text = (ROOT / "roles/fedkafka_common/templates/scrape_target.json.j2").read_text()
    rendered = env.from_string(text).render(fedkafka_scrape_address="10.0.0.5:9300", fedkafka_scrape_service="proxy",
                                            inventory_hostname="proxy-1")
    assert json.loads(rendered) == [{"targets": ["10.0.0.5:9300"],
                                     "labels": {"job": "fedkafka-proxy", "fedkafka_host": "proxy-1"}}]
