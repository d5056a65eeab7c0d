"""The fleet simulator: seeded, realistic jukebox traffic with labelled fraud.

Pure (no I/O, no clock): give it a start time and a seed, read records in the
order a producer would send them. `dataflows.simulate` publishes them to Kafka.

>>> from datetime import timedelta
>>> sim = Simulation(jukeboxes=20, seed=1, duration=timedelta(minutes=20), fraud_rate=0.0)
>>> record = next(r for r in sim.records() if r.topic_attr == "plays")
>>> record.key.startswith(b"jb-"), record.contract.__name__
(True, 'PlayEvent')
"""

from simulator.catalog import GENRE_NAMES, Song, SongCatalog
from simulator.fleet import Fleet, Venue
from simulator.fraud import SCENARIOS, FraudLabel
from simulator.records import EVENT_TOPICS, SimRecord
from simulator.simulation import DEFAULT_START, Simulation
from simulator.tastes import TasteShift

__all__ = [
    "DEFAULT_START",
    "EVENT_TOPICS",
    "GENRE_NAMES",
    "SCENARIOS",
    "Fleet",
    "FraudLabel",
    "SimRecord",
    "Simulation",
    "Song",
    "SongCatalog",
    "TasteShift",
    "Venue",
]
