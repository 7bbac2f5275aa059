"""The ``tensorguard`` code location: the coordinator, the sites and the publisher.

workspace.yaml loads it beside ``tensorguard_assets.aggregator_definitions`` and
``tensorguard_assets.custodian_definitions``; see :mod:`tensorguard_assets.locations`.
"""

from tensorguard_assets.locations import COORDINATOR

defs = COORDINATOR.definitions()
