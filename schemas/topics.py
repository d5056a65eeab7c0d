"""Kafka topic names, defined once and versioned with their contract.

A deployment may add a prefix (per environment, or per replay namespace).

>>> Topics().plays
'jukebox.plays.v1'
>>> Topics(prefix="replay-42.").fraud_alerts
'replay-42.jukebox.fraud-alerts.v1'
>>> [s.name for s in Topics().specs() if s.compacted]
['jukebox.venues.v1', 'jukebox.recommendations.v1', 'jukebox.song-catalog.v1']
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool
    contract: str  # name of the schema class carried, for docs and checks
    keyed_by: str


_BASE = {
    # attribute: (base name, default partitions, compacted, contract, key)
    "plays": ("jukebox.plays.v1", 8, False, "PlayEvent", "jukebox_id"),
    "payments": ("jukebox.payments.v1", 8, False, "PaymentEvent", "jukebox_id"),
    "locations": ("jukebox.device-locations.v1", 4, False, "DeviceLocationEvent", "jukebox_id"),
    "venues": ("jukebox.venues.v1", 2, True, "VenueRegistration", "venue_id"),
    "fraud_alerts": ("jukebox.fraud-alerts.v1", 4, False, "FraudAlert", "jukebox_id"),
    "recommendations": ("jukebox.recommendations.v1", 4, True, "RecommendationUpdate", "jukebox_id"),
    "dead_letters": ("jukebox.dead-letters.v1", 2, False, "DeadLetter", "source topic"),
    "late_events": ("jukebox.late-events.v1", 2, False, "DeadLetter", "source topic"),
    "labels": ("jukebox.fraud-labels.v1", 2, False, "FraudLabel", "jukebox_id"),
    "song_catalog": ("jukebox.song-catalog.v1", 1, True, "Song", "song_id"),
    "model_events": ("jukebox.model-events.v1", 1, False, "ModelEvent", "model name"),
}


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = ""

    def _name(self, attr: str) -> str:
        return self.prefix + _BASE[attr][0]

    @property
    def plays(self) -> str:
        return self._name("plays")

    @property
    def payments(self) -> str:
        return self._name("payments")

    @property
    def locations(self) -> str:
        return self._name("locations")

    @property
    def venues(self) -> str:
        return self._name("venues")

    @property
    def fraud_alerts(self) -> str:
        return self._name("fraud_alerts")

    @property
    def recommendations(self) -> str:
        return self._name("recommendations")

    @property
    def dead_letters(self) -> str:
        return self._name("dead_letters")

    @property
    def late_events(self) -> str:
        return self._name("late_events")

    @property
    def labels(self) -> str:
        return self._name("labels")

    @property
    def song_catalog(self) -> str:
        return self._name("song_catalog")

    @property
    def model_events(self) -> str:
        return self._name("model_events")

    @property
    def inputs(self) -> tuple[str, ...]:
        """The event topics the feature flow consumes."""
        return (self.plays, self.payments, self.locations, self.venues)

    def specs(self) -> list[TopicSpec]:
        return [
            TopicSpec(self.prefix + name, parts, compacted, contract, key)
            for name, parts, compacted, contract, key in _BASE.values()
        ]
