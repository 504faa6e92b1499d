"""The event sender (``flask --app server events run``): delivers the outbox, at least once,
to RabbitMQ and to webhooks.

Each destination has its own thread, its own place in the outbox and its own backoff, so
a dead webhook never holds up the broker or another webhook. A destination takes events
in id order, a batch at a time; what it confirmed (the broker's publisher confirm, the
webhook's 2xx) is recorded in ``event_deliveries`` and never sent again, what it did not
is sent again after a pause that doubles up to ``BACKOFF_MAX``. A sender killed between
a delivery and its record sends that batch again: consumers deduplicate by event id.

Everything up to a destination's ``floor`` is delivered; pending events are looked for
above it only. The floor never passes an event younger than ``FLOOR_LAG``: on PostgreSQL
a transaction may commit after a later one, so a fresh id below a delivered one may still
appear; an id allocated that long ago has long been committed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from common.settings import ConfigError
from common.version import __version__

from .database import insert_ignore, utcnow
from .events import EventType, event_message
from .models import Event, EventDelivery, EventDestination

log = logging.getLogger(__name__)

#: Events per delivery batch (and per outbox read).
BATCH = 200
#: The longest pause between two attempts at a failing destination, in seconds.
BACKOFF_MAX = 300
#: How old an event must be before a destination's floor may pass it (see the module doc).
FLOOR_LAG = timedelta(minutes=5)
#: How often an idle destination looks at the outbox again, in seconds.
POLL_SECONDS = 1.0
#: How often old delivered events are pruned, in seconds.
PRUNE_EVERY = 60.0
#: A webhook's connect and read timeouts, in seconds: a hanging receiver is a failure.
WEBHOOK_TIMEOUT = (5, 15)
SIGNATURE_HEADER = "X-Fetchfleet-Signature-256"


class DeliveryError(Exception):
    """A destination took the first ``delivered`` events of a batch, then failed."""

    def __init__(self, reason: str, delivered: int = 0):
        super().__init__(reason)
        self.delivered = delivered


# ------------------------------------------------------------------ destinations


class Destination:
    """Somewhere events go. ``deliver`` sends a batch in order and returns only when each
    event is confirmed; it raises ``DeliveryError`` naming how many were."""

    name: str
    types: frozenset[str] | None = None  # None: every type

    def deliver(self, messages: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop any connection; the next delivery opens a new one."""


class AmqpDestination(Destination):
    """A RabbitMQ topic exchange (AMQP 0-9-1): routing key = event type, persistent
    messages, publisher confirms (a publish returns once the broker has the message)."""

    def __init__(self, url: str, exchange: str):
        self.url, self.exchange = url, exchange
        self.name = "amqp"
        self._connection = None
        self._channel = None

    def _open(self):
        import pika

        parameters = pika.URLParameters(self.url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = 5
        parameters.blocked_connection_timeout = 30
        self._connection = pika.BlockingConnection(parameters)
        channel = self._connection.channel()
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        channel.confirm_delivery()
        self._channel = channel

    def deliver(self, messages: Sequence[dict[str, Any]]) -> None:
        import pika
        import pika.exceptions

        delivered = 0
        try:
            if self._channel is None or not self._channel.is_open:
                self._open()
            for message in messages:
                properties = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=str(message["id"]),
                    type=message["type"],
                    app_id="fetchfleet",
                )
                body = json.dumps(message).encode()
                self._channel.basic_publish(self.exchange, message["type"], body, properties)
                delivered += 1
        except (pika.exceptions.AMQPError, OSError) as problem:
            self.close()
            raise DeliveryError(_amqp_reason(problem, self.url), delivered) from None

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass


def _amqp_reason(problem: Exception, url: str) -> str:
    where = urlsplit(url)
    text = str(problem) or problem.__class__.__name__
    return f"RabbitMQ at {where.hostname}:{where.port or 5672}: {problem.__class__.__name__}: {text}"[:500]


class WebhookDestination(Destination):
    """An HTTP endpoint: one POST per event, its JSON body signed with HMAC-SHA256 of the
    webhook's secret (``X-Fetchfleet-Signature-256: sha256=<hex>``, as GitHub signs)."""

    def __init__(self, url: str, secret: str, types: frozenset[str] | None = None):
        self.url, self.secret, self.types = url, secret.encode(), types
        self.name = "webhook " + _printable(url)
        self._http = requests.Session()

    def deliver(self, messages: Sequence[dict[str, Any]]) -> None:
        for delivered, message in enumerate(messages):
            body = json.dumps(message).encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"fetchfleet/{__version__}",
                "X-Fetchfleet-Event": message["type"],
                "X-Fetchfleet-Event-Id": str(message["id"]),
                SIGNATURE_HEADER: "sha256=" + sign(self.secret, body),
            }
            try:
                answer = self._http.post(
                    self.url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT, allow_redirects=False
                )
            except requests.RequestException as problem:
                raise DeliveryError(f"{self.name}: {problem.__class__.__name__}", delivered) from None
            if not 200 <= answer.status_code < 300:
                raise DeliveryError(f"{self.name}: HTTP {answer.status_code}", delivered)

    def close(self) -> None:
        self._http.close()
        self._http = requests.Session()


def sign(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 of a webhook body: what a receiver computes to check it."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _printable(url: str) -> str:
    """A webhook URL without credentials or query (they may hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"[:190]


def destinations_from_config(config: Mapping[str, Any]) -> list[Destination]:
    """The configured destinations, checked (a ConfigError names the setting)."""
    destinations: list[Destination] = []
    url = config.get("EVENTS_AMQP_URL")
    if url is not None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("amqp", "amqps") or not urlsplit(url).hostname:
            raise ConfigError("EVENTS_AMQP_URL must be an amqp:// or amqps:// URL with a host")
        exchange = config.get("EVENTS_AMQP_EXCHANGE")
        if not isinstance(exchange, str) or not exchange or len(exchange) > 127:
            raise ConfigError("EVENTS_AMQP_EXCHANGE must be an exchange name (1 to 127 characters)")
        destinations.append(AmqpDestination(url, exchange))
    hooks = config.get("EVENTS_WEBHOOKS") or []
    if not isinstance(hooks, list):
        raise ConfigError("EVENTS_WEBHOOKS must be a list of {'url', 'secret', 'types'} entries")
    known_types = {str(t) for t in EventType}
    for position, hook in enumerate(hooks):
        where = f"EVENTS_WEBHOOKS[{position}]"
        if not isinstance(hook, dict) or set(hook) - {"url", "secret", "types"}:
            raise ConfigError(f"{where} must be an object with 'url', 'secret' and optional 'types'")
        target = hook.get("url")
        if not isinstance(target, str) or urlsplit(target).scheme not in ("http", "https"):
            raise ConfigError(f"{where}.url must be an http:// or https:// URL")
        secret = hook.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"{where}.secret must be a string of at least 16 characters (it signs each POST)")
        types = hook.get("types")
        if types is not None:
            if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
                raise ConfigError(f"{where}.types must be a non-empty list of event types")
            unknown = sorted(set(types) - known_types)
            if unknown:
                raise ConfigError(f"{where}.types: unknown event type(s) {', '.join(unknown)}")
        destinations.append(WebhookDestination(target, secret, frozenset(types) if types else None))
    names = [destination.name for destination in destinations]
    if len(set(names)) != len(names):
        raise ConfigError("EVENTS_WEBHOOKS names the same URL twice")
    return destinations


# ------------------------------------------------------------------ the outbox side


@dataclass(frozen=True)
class Backlog:
    """Where one destination stands, for ``events status``."""

    name: str
    pending: int
    oldest_pending: datetime | None
    floor: int
    failures: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_delivered_at: datetime | None


def _wanted(destination: Destination):
    return Event.type.in_(sorted(destination.types)) if destination.types is not None else True


def _undelivered(destination: Destination, floor: int):
    delivered = exists().where(EventDelivery.destination == destination.name, EventDelivery.event_id == Event.id)
    return and_(Event.id > floor, _wanted(destination), ~delivered)


def _state(session: Session, name: str) -> EventDestination:
    state = session.get(EventDestination, name)
    if state is None:
        session.execute(insert_ignore(session, EventDestination).values(name=name, floor=0, failures=0))
        state = session.get(EventDestination, name)
    return state


def pending_events(session: Session, destination: Destination, limit: int = BATCH) -> list[dict[str, Any]]:
    """The next events ``destination`` has not confirmed, oldest first, as messages."""
    floor = _state(session, destination.name).floor
    rows = session.execute(
        select(Event.id, Event.type, Event.created_at, Event.body)
        .where(_undelivered(destination, floor))
        .order_by(Event.id)
        .limit(limit)
    ).all()
    return [event_message(row.id, row.type, row.created_at, row.body) for row in rows]


def record_delivered(session: Session, destination: Destination, event_ids: Sequence[int], now: datetime) -> None:
    if event_ids:
        rows = [{"destination": destination.name, "event_id": event_id, "delivered_at": now} for event_id in event_ids]
        session.execute(insert_ignore(session, EventDelivery), rows)
        session.execute(
            update(EventDestination)
            .where(EventDestination.name == destination.name)
            .values(failures=0, next_attempt_at=None, last_delivered_at=now)
        )


def record_failure(session: Session, destination: Destination, reason: str, now: datetime) -> EventDestination:
    state = _state(session, destination.name)
    state.failures += 1
    state.next_attempt_at = now + timedelta(seconds=min(2 ** (state.failures - 1), BACKOFF_MAX))
    state.last_error, state.last_error_at = reason[:1000], now
    return state


def advance_floor(session: Session, destination: Destination, now: datetime) -> int:
    """Move the destination's floor up to its first undelivered event (or the newest
    event old enough, if none is)."""
    state = _state(session, destination.name)
    first_pending = session.scalar(select(func.min(Event.id)).where(_undelivered(destination, state.floor)))
    horizon = session.scalar(select(func.max(Event.id)).where(Event.created_at < now - FLOOR_LAG)) or 0
    candidate = horizon if first_pending is None else min(horizon, first_pending - 1)
    if candidate > state.floor:
        state.floor = candidate
    return state.floor


def prune(session: Session, destinations: Sequence[Destination], keep: timedelta, now: datetime) -> int:
    """Delete events older than ``keep`` that every destination has (or does not want)."""
    floors = [_state(session, destination.name).floor for destination in destinations]
    cutoff = now - keep
    upto = session.scalar(
        select(func.max(Event.id)).where(Event.created_at < cutoff, *([Event.id <= min(floors)] if floors else []))
    )
    if upto is None:
        return 0
    deleted = session.execute(delete(Event).where(Event.id <= upto)).rowcount
    session.execute(delete(EventDelivery).where(EventDelivery.event_id <= upto))
    return deleted


def backlog(session: Session, destinations: Sequence[Destination], now: datetime | None = None) -> list[Backlog]:
    now = now or utcnow()
    report = []
    for destination in destinations:
        state = _state(session, destination.name)
        count, oldest = session.execute(
            select(func.count(), func.min(Event.created_at)).where(_undelivered(destination, state.floor))
        ).one()
        report.append(
            Backlog(
                destination.name,
                count,
                oldest,
                state.floor,
                state.failures,
                state.next_attempt_at,
                state.last_error,
                state.last_delivered_at,
            )
        )
    session.commit()
    return report


# ------------------------------------------------------------------ the sender


class Sender:
    """Delivers the outbox to every destination, one thread each, until stopped."""

    def __init__(self, engine: Engine, destinations: Sequence[Destination], *, keep: timedelta):
        self.engine, self.destinations, self.keep = engine, list(destinations), keep
        self.stop = threading.Event()
        #: Destinations with nothing pending at their last look.
        self.idle: set[str] = set()
        #: Destinations a draining run stopped trying (they failed ``give_up_after`` times in a row).
        self.gave_up: set[str] = set()

    def run(self, *, drain: bool = False, give_up_after: int = 5) -> None:
        """Deliver until stopped; ``drain``: until every destination has nothing left, or
        failed ``give_up_after`` times in a row (named in ``gave_up``)."""
        threads = [
            threading.Thread(
                target=self._deliver_forever,
                args=(destination, give_up_after if drain else None),
                name=destination.name,
                daemon=True,
            )
            for destination in self.destinations
        ]
        for thread in threads:
            thread.start()
        everyone = {destination.name for destination in self.destinations}
        last_prune = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() - last_prune >= PRUNE_EVERY:
                    self._prune_once()
                    last_prune = time.monotonic()
                if drain and self.idle | self.gave_up >= everyone:
                    self.stop.set()
                self.stop.wait(POLL_SECONDS)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()

    def _prune_once(self) -> None:
        with Session(self.engine) as session:
            pruned = prune(session, self.destinations, self.keep, utcnow())
            session.commit()
        if pruned:
            log.info("pruned %d delivered event(s) older than %s", pruned, self.keep)

    def _deliver_forever(self, destination: Destination, give_up_after: int | None) -> None:
        failing, failures = False, 0
        try:
            while not self.stop.is_set():
                try:
                    wait, failing = self._deliver_once(destination, failing)
                    if not failing:
                        failures = 0
                    elif wait == 0.0:  # an attempt that failed (not a pause in the backoff)
                        failures += 1
                except Exception:  # the database went away, say: log it, try again
                    log.exception("%s: delivery pass failed", destination.name)
                    wait = 5.0
                if give_up_after is not None and failures >= give_up_after:
                    self.gave_up.add(destination.name)
                    return
                if wait:
                    self.stop.wait(wait)
        finally:
            destination.close()

    def _deliver_once(self, destination: Destination, failing: bool) -> tuple[float, bool]:
        """One batch; returns how long to wait before the next, and whether it failed."""
        with Session(self.engine) as session:
            now = utcnow()
            state = _state(session, destination.name)
            if state.next_attempt_at is not None and state.next_attempt_at > now:
                session.commit()
                return min((state.next_attempt_at - now).total_seconds(), POLL_SECONDS * 5), failing
            messages = pending_events(session, destination)
            session.commit()
            if not messages:
                advance_floor(session, destination, now)
                session.commit()
                self.idle.add(destination.name)
                return POLL_SECONDS, failing
            self.idle.discard(destination.name)
            try:
                destination.deliver(messages)
            except DeliveryError as problem:
                now = utcnow()
                record_delivered(session, destination, [m["id"] for m in messages[: problem.delivered]], now)
                state = record_failure(session, destination, str(problem), now)
                session.commit()
                if not failing:
                    log.warning("%s: %s; trying again with backoff", destination.name, problem)
                return 0.0, True
            now = utcnow()
            record_delivered(session, destination, [m["id"] for m in messages], now)
            advance_floor(session, destination, now)
            session.commit()
            if failing:
                log.warning("%s: delivering again", destination.name)
            return 0.0, False
