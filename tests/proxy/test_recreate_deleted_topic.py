"""An unmodified Kafka client (confluent-kafka's AdminClient) deletes a topic through a proxy while one of its
clusters is down, and creates it again: refused with TOPIC_ALREADY_EXISTS (36) and the controller's message until
the controller's scan has removed the physical topic left behind, then created empty (docs/DESIGN.md §5.8)."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from workflows.support import wait_for

from fedkafka.view.model import shadow_topic
from proxy.support import ROOT, free_port, read_partition

pytestmark = pytest.mark.integration


def _create_error(admin: AdminClient, name: str) -> KafkaError | None:
    try:
        admin.create_topics([NewTopic(name, 2)], request_timeout=60)[name].result(90)
    except KafkaException as e:
        return e.args[0]
    return None


@pytest.mark.timeout(600)
def test_create_topics_of_a_name_still_being_deleted_answers_topic_already_exists(
        kafka_clusters, make_clusters, unique_name, tmp_path):
    shared, (down,) = kafka_clusters[0], make_clusters("d2")
    name = unique_name
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    ctl_port, proxy_port = free_port(), free_port()
    url = f"http://127.0.0.1:{ctl_port}"
    logs = open(tmp_path / "services.log", "wb")  # noqa: SIM115 - closed below
    procs = [subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                               f"sqlite:///{tmp_path / 'ctl.db'}", "--listen", f"127.0.0.1:{ctl_port}",
                               "--token-file", str(token), "--scan-interval", "0.5"],
                              stdout=logs, stderr=subprocess.STDOUT, cwd=ROOT)]
    try:
        api = httpx.Client(base_url=url, headers={"Authorization": "Bearer secret-token"}, timeout=60)
        wait_for(lambda: api.get("/v1/status").status_code == 200, 120, "the controller")
        for cid, cluster in (("c1", shared), ("d2", down)):
            api.put(f"/v1/clusters/{cid}", json={"bootstrap": cluster.bootstrap}).raise_for_status()
        procs.append(subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                                       f"127.0.0.1:{proxy_port}", "--controller", url, "--token-file", str(token)],
                                      stdout=logs, stderr=subprocess.STDOUT, cwd=ROOT))
        wait_for(lambda: any(p["port"] == proxy_port for p in api.get("/v1/view").json()["proxies"]), 120,
                 "the proxy in the view")
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{proxy_port}"})
        assert _create_error(admin, name) is None
        assert api.get(f"/v1/topics/{name}").json()["chains"][1]["segments"][0]["cluster"] == "d2"
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{proxy_port}", "acks": "all"})
        for i in range(5):
            producer.produce(name, value=b"old-%d" % i, partition=1)
        assert producer.flush(60) == 0

        down.stop()
        admin.delete_topics([name], request_timeout=60)[name].result(90)
        error = _create_error(admin, name)
        assert error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS, error
        assert f"Topic '{name}' is marked for deletion (physical topic " in error.str()
        # its shadow topic too: d2 may have held the groups (docs/DESIGN.md §10.3)
        assert f"physical topic {name} on cluster d2 not yet removed" in error.str()
        assert f"physical topic {shadow_topic(name)} on cluster d2" in error.str()

        down.start()
        down.wait_ready()
        wait_for(lambda: api.get("/v1/status").json()["pending_deletions"] == {}, 120, "the scan to delete it")
        assert _create_error(admin, name) is None
        producer.produce(name, value=b"new", partition=1)
        assert producer.flush(60) == 0
        assert [v for _o, _k, v in read_partition(down.bootstrap, name, 0)] == [b"new"]
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        logs.close()
