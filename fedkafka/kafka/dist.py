"""Find or fetch a runnable Apache Kafka: its jars from Maven Central, cached outside the repo.

The Kafka version is pinned here and nowhere else (`KAFKA_VERSION`). Resolution order:
1. `KAFKA_HOME` pointing at an unpacked Apache Kafka distribution (its `libs/*.jar`);
2. the cache `~/.cache/fedkafka/kafka-<version>-<pom hash>/libs` (or `$FEDKAFKA_CACHE_DIR`), complete when it holds
   the marker `.complete`; a second run is then offline and instant;
3. `mvn dependency:copy-dependencies` on the pom shipped beside this module.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.4.0"
MIN_JAVA = 17
_POM = Path(__file__).with_name("pom.xml")
_MARKER = ".complete"


class KafkaDistError(RuntimeError):
    """Kafka (or Java/Maven to get it) is not available; the message says what to do."""


@dataclass(frozen=True)
class KafkaDist:
    version: str
    libs: Path
    java: str

    @property
    def classpath(self) -> str:
        # A wildcard classpath keeps command lines short; the JVM expands it.
        return str(self.libs / "*")

    def java_command(self, main_class: str, *args: str, heap: str | None = None,
                     jvm_opts: tuple[str, ...] = ()) -> list[str]:
        cmd = [self.java]
        if heap:
            cmd += [f"-Xmx{heap}", f"-Xms{heap}"]
        cmd += ["-Djava.awt.headless=true", *jvm_opts, "-cp", self.classpath, main_class, *args]
        return cmd


def cache_root() -> Path:
    env = os.environ.get("FEDKAFKA_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "fedkafka"


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise KafkaDistError(f"could not read the Java version from `{java} -version`: {out.strip()!r}")
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def _apt_install(packages: list[str]) -> None:
    subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _ensure_tool(name: str, apt_package: str, install: bool) -> str:
    path = shutil.which(name)
    if path:
        return path
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install([apt_package])
        path = shutil.which(name)
        if path:
            return path
    raise KafkaDistError(
        f"`{name}` was not found on PATH. Install it first, e.g. `sudo apt-get install {apt_package}` "
        f"(Java {MIN_JAVA}+ and Maven are needed to run Apache Kafka from Maven Central)."
    )


def find_java(install: bool = True) -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home and Path(java_home, "bin", "java").exists() \
        else _ensure_tool("java", "openjdk-17-jre-headless", install)
    major = _java_major(java)
    if major < MIN_JAVA:
        raise KafkaDistError(f"Java {major} found at {java}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+. "
                             "Install openjdk-17-jre-headless or set JAVA_HOME.")
    return java


def _from_kafka_home(java: str) -> KafkaDist | None:
    home = os.environ.get("KAFKA_HOME")
    if not home:
        return None
    libs = Path(home) / "libs"
    jars = sorted(libs.glob("kafka_2.13-*.jar"))
    if not jars:
        raise KafkaDistError(f"KAFKA_HOME={home} is not an unpacked Apache Kafka distribution "
                             f"(no {libs}/kafka_2.13-*.jar)")
    version = re.sub(r"^kafka_2\.13-|\.jar$", "", jars[0].name)
    return KafkaDist(version=version, libs=libs, java=java)


def cached_libs(version: str = KAFKA_VERSION) -> Path:
    # Keyed by the pom too: a changed dependency list (e.g. the logging jars) resolves into a fresh cache
    # instead of reusing a complete one made from the old list.
    pom_key = hashlib.sha256(_POM.read_bytes()).hexdigest()[:8]
    return cache_root() / f"kafka-{version}-{pom_key}" / "libs"


def ensure_kafka(version: str = KAFKA_VERSION, install: bool = True, quiet: bool = True) -> KafkaDist:
    """Return a runnable Kafka, fetching its jars once with Maven when needed."""
    if not re.fullmatch(r"\d+\.\d+\.\d+(-[A-Za-z0-9.]+)?", version):
        raise KafkaDistError(f"{version!r} is not a Kafka version (expected e.g. {KAFKA_VERSION})")
    java = find_java(install)
    home = _from_kafka_home(java)
    if home:
        return home
    libs = cached_libs(version)
    if (libs / _MARKER).exists():
        return KafkaDist(version=version, libs=libs, java=java)
    if int(version.split(".")[0]) < 4:
        raise KafkaDistError(f"Kafka {version} is not supported: fedkafka runs Apache Kafka 4.x in KRaft mode")
    mvn = _ensure_tool("mvn", "maven", install)
    # Resolve into a temporary dir first so an interrupted download never looks complete.
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    cmd = [mvn, "-B", "-f", str(_POM), f"-Dkafka.version={version}", "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    if proc.returncode != 0 or not list(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-15:])
        raise KafkaDistError(f"Apache Kafka {version} could not be resolved from Maven Central "
                             f"(mvn exit {proc.returncode}). Is {version} a released Kafka 4.x version?\n{tail}")
    (staging / _MARKER).write_text(version + "\n")
    if libs.exists():
        shutil.rmtree(libs)
    staging.rename(libs)
    return KafkaDist(version=version, libs=libs, java=java)
