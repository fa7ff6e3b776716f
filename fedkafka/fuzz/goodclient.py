"""The well-behaved client beside the fuzz: a confluent-kafka producer and a group consumer through the name
service, counting every error librdkafka reports; at the end every acked record must have been consumed."""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer


class GoodClient:
    def __init__(self, bootstrap: str, topic: str, rate: float = 50.0):
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.run_id = uuid.uuid4().hex[:8]
        self.acked: set[str] = set()
        self.consumed: set[str] = set()
        self.errors: list[str] = []
        self.error_count = 0
        self.produced = 0
        self._stop_producing = threading.Event()
        self._stop_consuming = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._produce, daemon=True, name="good-producer"),
                         threading.Thread(target=self._consume, daemon=True, name="good-consumer")]

    def _error(self, where: str, err) -> None:
        with self._lock:
            self.error_count += 1
            if len(self.errors) < 30:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {where}: {err}")

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _produce(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "client.id": "good-producer", "acks": "all",
                             "enable.idempotence": True, "linger.ms": 5, "log_level": 4,
                             "error_cb": lambda err: self._error("producer", err)})

        def on_delivery(err, msg) -> None:
            if err is not None:
                self._error("delivery", err)
            else:
                with self._lock:
                    self.acked.add(msg.value().decode())

        seq = 0
        while not self._stop_producing.is_set():
            producer.produce(self.topic, key=f"k{seq % 16}".encode(), value=f"{self.run_id}:{seq}".encode(),
                             on_delivery=on_delivery)
            seq += 1
            self.produced = seq
            producer.poll(1 / self.rate)
        left = producer.flush(60)
        if left:
            self._error("producer", f"{left} records not delivered after flush")

    def _consume(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "client.id": "good-consumer",
                             "group.id": f"good-group-{self.run_id}", "auto.offset.reset": "earliest",
                             "enable.auto.commit": True, "session.timeout.ms": 10000, "log_level": 4,
                             "error_cb": lambda err: self._error("consumer", err)})
        consumer.subscribe([self.topic])
        prefix = f"{self.run_id}:"
        try:
            while not self._stop_consuming.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        self._error("consume", error)
                    continue
                value = (msg.value() or b"").decode(errors="replace")
                if value.startswith(prefix):
                    with self._lock:
                        self.consumed.add(value)
        finally:
            consumer.close()

    def finish(self, catch_up: float = 60.0) -> dict:
        """Stop producing, flush, give the consumer `catch_up` seconds to read every acked record."""
        self._stop_producing.set()
        self._threads[0].join(90)
        deadline = time.monotonic() + catch_up
        while time.monotonic() < deadline and self.missing():
            time.sleep(0.2)
        self._stop_consuming.set()
        self._threads[1].join(30)
        return self.report()

    def missing(self) -> set[str]:
        with self._lock:
            return self.acked - self.consumed

    def report(self) -> dict:
        missing = self.missing()
        return {"produced": self.produced, "acked": len(self.acked), "consumed": len(self.consumed),
                "acked_not_consumed": len(missing), "errors": self.error_count, "error_samples": self.errors}
