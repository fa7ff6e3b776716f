"""How `fedkafka.kafka.apps` decides what to rebuild and what it puts beside the classes (no JVM)."""

from __future__ import annotations

from pathlib import Path

from fedkafka.kafka.apps import APPS, copy_resources, source_key


def _apps(tmp: Path) -> Path:
    (tmp / "src" / "META-INF" / "services").mkdir(parents=True)
    (tmp / "pom.xml").write_text("<project/>")
    (tmp / "src" / "Source.java").write_text("class Source {}")
    (tmp / "src" / "META-INF" / "services" / "org.apache.kafka.connect.source.SourceConnector").write_text("Source\n")
    return tmp


def test_a_changed_service_manifest_rebuilds_the_apps(tmp_path):
    apps = _apps(tmp_path)
    before = source_key(apps)
    assert source_key(apps) == before
    (apps / "src" / "META-INF" / "services" / "org.apache.kafka.connect.source.SourceConnector").write_text("Other\n")
    assert source_key(apps) != before


def test_a_renamed_source_rebuilds_the_apps(tmp_path):
    apps = _apps(tmp_path)
    before = source_key(apps)
    (apps / "src" / "Source.java").rename(apps / "src" / "Renamed.java")
    assert source_key(apps) != before


def test_resources_go_beside_the_classes_and_sources_do_not(tmp_path):
    apps = _apps(tmp_path / "apps")
    classes = tmp_path / "classes"
    copy_resources(apps / "src", classes)
    files = sorted(str(p.relative_to(classes)) for p in classes.rglob("*") if p.is_file())
    assert files == ["META-INF/services/org.apache.kafka.connect.source.SourceConnector"]


def test_the_connectors_are_declared_for_connects_service_loader():
    """Connect finds plugins by these manifests (plugin.discovery=service_load); a connector missing here is
    unknown to the worker."""
    services = APPS / "src" / "META-INF" / "services"
    declared = {f.name: f.read_text().split() for f in services.iterdir()}
    assert declared == {"org.apache.kafka.connect.source.SourceConnector": ["NumberedSource"],
                        "org.apache.kafka.connect.sink.SinkConnector": ["FileSink"]}
    for names in declared.values():
        assert all((APPS / "src" / f"{name}.java").exists() for name in names)
