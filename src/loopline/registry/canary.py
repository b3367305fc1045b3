"""A canary: a challenger answering a share of live traffic while it is judged.

The registry keeps a running canary as one tag of the registered model (`tags.CANARY`,
JSON): the version under test, the champion it faces, its step and the share of records
it answers. A tag in the registry, not a Prefect variable nor an admin endpoint, because
every API worker of every replica already follows the registry (each `serve.poll_seconds`):
all of them see one share without being told one by one (an admin call reaches only the
worker that accepts it), serving keeps no dependency on the Prefect server, and the share
changes under the registry lock, in the same linearizable history as the champion alias.

Which records the canary answers is fixed by their key: a record's bucket is a hash of
its key fields, salted with the canary's version, read as a number in [0, 1); the canary
answers the records whose bucket is below its share. So one flight (or customer) gets
one arm on every request and every worker, raising the share keeps every record already
in the canary there, and the next canary draws its own population.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from loopline.core.errors import LooplineError

CHAMPION_ARM = "champion"
CANARY_ARM = "canary"
SEPARATOR = "\x1f"  # between key fields: ("1", "23") and ("12", "3") hash apart
BUCKETS = float(2**64)


@dataclass(frozen=True)
class Canary:
    """A running canary, as the registry's tag holds it."""

    version: str  # the challenger under test
    champion: str  # the champion it faces; the promotion fails if that moved
    step: int  # index into the canary's steps
    share: float  # of records (by bucket) it answers now
    started_at: str  # ISO time its first step began
    stepped_at: str  # ISO time its current step began

    def to_json(self) -> str:
        """The tag's text."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Canary:
        """Parse the tag; a damaged one is a LooplineError naming it."""
        try:
            canary = cls(**json.loads(text))
        except (TypeError, ValueError) as error:
            raise LooplineError(
                f"the registry's canary tag is not readable ({error}): {text!r}"
            ) from None
        if not 0 <= canary.share <= 1:
            raise LooplineError(f"the registry's canary share {canary.share} is not in [0, 1]")
        return canary

    def at_step(self, step: int, share: float, now: str) -> Canary:
        """The same canary moved to another step."""
        return replace(self, step=step, share=share, stepped_at=now)

    def answers(self, columns: Mapping[str, np.ndarray], key: Sequence[str]) -> np.ndarray:
        """For each record, whether the canary answers it (its bucket is below the share)."""
        return buckets(columns, key, self.version) < self.share


def buckets(columns: Mapping[str, np.ndarray], key: Sequence[str], salt: str) -> np.ndarray:
    """Each record's bucket in [0, 1): a BLAKE2b hash of its key fields and `salt`.

    `columns` are record columns (`loopline.data.columns`). Values are hashed as text, so
    a key read from JSON, a frame or Parquet lands in the same bucket (integers as
    integers: 1545, never 1545.0); a missing text field hashes as "None".
    """
    if not key:
        raise LooplineError("a canary needs the dataset's key fields to split traffic by")
    prefix = salt.encode() + SEPARATOR.encode()
    keys = zip(*(columns[name].tolist() for name in key), strict=True)
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(prefix + SEPARATOR.join(map(str, values)).encode(),
                                digest_size=8).digest(), "big",
            ) / BUCKETS
            for values in keys
        ],
        dtype=float,
    )  # fmt: skip
