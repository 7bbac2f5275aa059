"""MQTT topic layout for fleet notifications, in the spirit of VDA 5050.

VDA 5050 puts an interface name and major version first, then the vehicle's identity,
then a topic per message type (``uagv/v2/{manufacturer}/{serial}/state``). TensorGuard
uses the same shape with the fleet and release channel as the identity:

* ``tensorguard/v1/{fleet}/{channel}/release``: release announcements, server to
  nodes, QoS 1, retained;
* ``tensorguard/v1/{fleet}/{channel}/nodes/{node}/install``: install reports, node to
  server, QoS 1, retained;
* ``tensorguard/v1/{fleet}/_connection/{node}``: connection state, node to server,
  QoS 1, retained.
* ``tensorguard/v1/{fleet}/{channel}/nodes/{node}/release``: a release announced to
  one node only (a canary cohort member), server to node, QoS 1, retained;
* ``tensorguard/v1/{fleet}/{channel}/rollback``: a signed rollback order (revoke a
  canary release, reinstall the previous one), server to nodes, QoS 1, retained.

The release topic is retained, so a node that connects late still receives the latest
release of its channel. Install reports are retained per node, so the server always
sees each node's last result. The connection topic carries ``ONLINE`` / ``OFFLINE``
and, as the node's MQTT last will, ``CONNECTIONBROKEN`` (the VDA 5050 connection
states). ``_connection`` cannot clash with a channel: channel names start with a letter
or digit.
"""

from __future__ import annotations

from tensorguard.fleet.names import validate_name

TOPIC_ROOT = "tensorguard/v1"


def _fleet_level(fleet: str) -> str:
    return f"{TOPIC_ROOT}/{validate_name('fleet', fleet)}"


def _node_level(fleet: str, channel: str, node_id: str) -> str:
    channel_level = validate_name("channel", channel)
    return f"{_fleet_level(fleet)}/{channel_level}/nodes/{validate_name('node', node_id)}"


def release_topic(fleet: str, channel: str) -> str:
    """Topic of release announcements for one fleet channel."""
    return f"{_fleet_level(fleet)}/{validate_name('channel', channel)}/release"


def install_report_topic(fleet: str, channel: str, node_id: str) -> str:
    """Topic on which one node reports install results for one channel."""
    return f"{_node_level(fleet, channel, node_id)}/install"


def install_report_filter(fleet: str, channel: str | None = None) -> str:
    """Subscription filter for install reports of a fleet (all channels when None)."""
    channel_level = "+" if channel is None else validate_name("channel", channel)
    return f"{_fleet_level(fleet)}/{channel_level}/nodes/+/install"


def connection_topic(fleet: str, node_id: str) -> str:
    """Topic carrying one node's connection state (and its last will)."""
    return f"{_fleet_level(fleet)}/_connection/{validate_name('node', node_id)}"


def node_release_topic(fleet: str, channel: str, node_id: str) -> str:
    """Topic of release announcements for one node only (a canary cohort member)."""
    return f"{_node_level(fleet, channel, node_id)}/release"


def rollback_topic(fleet: str, channel: str) -> str:
    """Topic of signed rollback orders for one fleet channel (retained)."""
    return f"{_fleet_level(fleet)}/{validate_name('channel', channel)}/rollback"
