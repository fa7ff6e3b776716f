"""Run the Java tools shipped in the Kafka jars (perf test, console producer/consumer, groups, topics).

They run from the same classpath as the brokers, against any bootstrap address (a broker, a proxy
or the name service), so later tests can point unmodified Java clients at fedkafka.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from fedkafka.kafka.dist import KafkaDist, ensure_kafka

TOOLS: dict[str, str] = {
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-configs": "org.apache.kafka.tools.ConfigCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "kafka-acls": "org.apache.kafka.tools.AclCommand",
    "kafka-transactions": "org.apache.kafka.tools.TransactionsCommand",
}
_QUIET_LOG4J = """\
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
"""


class UnknownTool(ValueError):
    pass


def _log4j_config() -> Path:
    path = Path(tempfile.gettempdir()) / "fedkafka-tools-log4j2.properties"
    if not path.exists() or path.read_text() != _QUIET_LOG4J:
        path.write_text(_QUIET_LOG4J)
    return path


def tool_command(tool: str, *args: str, dist: KafkaDist | None = None, heap: str = "256m") -> list[str]:
    main_class = TOOLS.get(tool)
    if main_class is None:
        raise UnknownTool(f"unknown Kafka tool {tool!r}; known: {', '.join(sorted(TOOLS))}")
    dist = dist or ensure_kafka()
    return dist.java_command(main_class, *args, heap=heap,
                             jvm_opts=(f"-Dlog4j2.configurationFile={_log4j_config()}",))


def run_tool(tool: str, *args: str, timeout: float = 120.0, input: str | None = None,
             check: bool = True, dist: KafkaDist | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; raises CalledProcessError (with output) when `check` and it fails."""
    proc = subprocess.run(tool_command(tool, *args, dist=dist), input=input, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def popen_tool(tool: str, *args: str, dist: KafkaDist | None = None, **popen_kwargs) -> subprocess.Popen:
    """Start a tool in the background (e.g. a console consumer that a test stops later)."""
    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    popen_kwargs.setdefault("text", True)
    return subprocess.Popen(tool_command(tool, *args, dist=dist), **popen_kwargs)
