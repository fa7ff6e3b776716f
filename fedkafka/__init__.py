"""fedkafka: many physical Kafka clusters behind one logical cluster."""

__version__ = "0.1.0"
