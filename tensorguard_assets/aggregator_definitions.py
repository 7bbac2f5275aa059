"""The ``tensorguard-aggregator`` code location: ``aggregated_update`` and its sensor.

The aggregator holds no secret of any kind (docs/KEYS.md): it reads the public
federation context, the signed site envelopes and the sites' public keys, and writes
the homomorphic sum. Its resources are the artifact store and the site registry, no
vault; see :mod:`tensorguard_assets.locations`.
"""

from tensorguard_assets.locations import AGGREGATOR

defs = AGGREGATOR.definitions()
