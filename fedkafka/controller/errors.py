"""Errors the admin API turns into HTTP answers with a message that says what is wrong."""

from __future__ import annotations


class ControllerError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None, kafka_error: str | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        # The Kafka error name a proxy answers a Kafka admin request with (e.g. "INVALID_PARTITIONS")
        self.kafka_error = kafka_error


class Forbidden(ControllerError):
    """The caller's token is good, but it may not act for what it names (another proxy's member id)."""

    status = 403


class NotFound(ControllerError):
    status = 404


class Conflict(ControllerError):
    status = 409


class Invalid(ControllerError):
    status = 422


class Unavailable(ControllerError):
    """A physical cluster needed for the change did not answer: nothing was written to the database."""

    status = 503


class PhysicalTopicLost(Conflict):
    """A physical topic a change would create or grow held data that its cluster lost: created again it would be
    empty and take writes at offsets already handed out (docs/DESIGN.md §9.3). Nothing was changed."""

    def __init__(self, which: str):
        super().__init__(f"physical topic {which} lost the data it held: not created again, nothing was changed "
                         "(docs/OPERATIONS.md, \"A cluster lost a topic's data\")", kafka_error="POLICY_VIOLATION")
