"""JSON Schema documents for every contract, for consumers in other languages.

Pure: returns documents; `jukebox schemas export` writes them to `schemas/json/`,
and a test fails when the committed files differ from what the code generates.

>>> sorted(json_schemas())[:2]
['DeadLetter.v1.json', 'DeviceLocationEvent.v1.json']
"""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.events import INPUT_CONTRACTS
from schemas.outputs import OUTPUT_CONTRACTS
from schemas.types import SCHEMA_VERSION

JSON_DIR = Path(__file__).parent / "json"


def json_schemas() -> dict[str, dict]:
    """File name -> JSON Schema (draft 2020-12) of each input and output contract."""
    documents = {}
    for contract in (*INPUT_CONTRACTS, *OUTPUT_CONTRACTS):
        schema = contract.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:jukebox-streams:{contract.__name__}:v{SCHEMA_VERSION}"
        documents[f"{contract.__name__}.v{SCHEMA_VERSION}.json"] = schema
    return documents


def json_schema_bytes(schema: dict) -> bytes:
    """Stable, reviewable encoding of one schema document."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
