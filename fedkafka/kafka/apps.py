"""Real Java applications for end-to-end tests: Kafka Streams and Kafka Connect of the pinned Kafka version.

`apps/pom.xml` lists them (kafka-streams, connect-runtime, and connect-file 4.3.1, the newest Maven Central
serves, for Kafka's own FileStream connectors; `apps/src/` also has a source and a sink connector of its own); Maven
copies their jars into the cache (`~/.cache/fedkafka/apps-<version>-<hash>/libs`, complete with a `.complete`
marker, as `dist.py` does for the broker), and the application sources in `apps/src/` are compiled there with javac
(one class per file, no build plugin to download); the other files of `apps/src/` (the connectors'
`META-INF/services` manifests, which Connect's plugin discovery reads) are copied beside the classes.
Nothing is vendored into the repository.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedkafka.kafka.dist import KAFKA_VERSION, KafkaDistError, _ensure_tool, cache_root, find_java

APPS = Path(__file__).resolve().parents[2] / "apps"
_MARKER = ".complete"
REQUIRED_JARS = ("kafka-streams", "connect-runtime", "connect-file")
CONNECT_DISTRIBUTED = "org.apache.kafka.connect.cli.ConnectDistributed"
CONNECT_STANDALONE = "org.apache.kafka.connect.cli.ConnectStandalone"


@dataclass(frozen=True)
class Apps:
    java: str
    libs: Path
    classes: Path

    def command(self, main_class: str, *args: str, heap: str = "256m", jvm_opts: tuple[str, ...] = ()) -> list[str]:
        return [self.java, f"-Xmx{heap}", "-Djava.awt.headless=true", *jvm_opts, "-cp",
                f"{self.classes}:{self.libs}/*", main_class, *args]


def ensure_apps(version: str = KAFKA_VERSION) -> Apps:
    """The applications' jars and compiled classes, resolved and built once per pom and sources."""
    java = find_java(install=False)
    root = cache_root() / f"apps-{version}-{source_key(APPS)}"
    libs, classes = root / "libs", root / "classes"
    if not (libs / _MARKER).exists():
        _resolve(libs, version)
    if not (classes / _MARKER).exists():
        _compile(libs, classes)
    return Apps(java=java, libs=libs, classes=classes)


def source_key(apps: Path) -> str:
    """What the built applications depend on: the pom and every file of src/ (names and contents)."""
    sources = [apps / "pom.xml", *sorted(p for p in (apps / "src").rglob("*") if p.is_file())]
    key = hashlib.sha256(b"".join(str(p.relative_to(apps)).encode() + b"\0" + p.read_bytes() for p in sources))
    return key.hexdigest()[:8]


def copy_resources(src: Path, classes: Path) -> None:
    """The files of src/ that are not Java sources (the connectors' META-INF/services), beside the classes."""
    for resource in src.rglob("*"):
        if resource.is_file() and resource.suffix != ".java":
            target = classes / resource.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(resource, target)


def _resolve(libs: Path, version: str) -> None:
    mvn = _ensure_tool("mvn", "maven", False)
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    proc = subprocess.run([mvn, "-B", "-q", "-f", str(APPS / "pom.xml"), f"-Dkafka.version={version}",
                           "dependency:copy-dependencies", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not all(list(staging.glob(f"{jar}-*.jar")) for jar in REQUIRED_JARS):
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaDistError(f"the applications' jars could not be resolved (mvn exit {proc.returncode}):\n"
                             f"{(proc.stdout + proc.stderr)[-2000:]}")
    (staging / _MARKER).write_text(version + "\n")
    if libs.exists():
        shutil.rmtree(libs)
    staging.rename(libs)


def _compile(libs: Path, classes: Path) -> None:
    javac = _ensure_tool("javac", "openjdk-17-jdk-headless", False)
    staging = Path(tempfile.mkdtemp(prefix="classes-", dir=classes.parent))
    sources = [str(p) for p in sorted((APPS / "src").glob("*.java"))]
    proc = subprocess.run([javac, "-d", str(staging), "-cp", f"{libs}/*", *sources], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaDistError(f"javac failed:\n{proc.stderr[-3000:]}")
    copy_resources(APPS / "src", staging)
    (staging / _MARKER).write_text("ok\n")
    if classes.exists():
        shutil.rmtree(classes)
    staging.rename(classes)
