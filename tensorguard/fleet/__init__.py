"""Fleet release distribution: registry, application DB, MQTT notification, edge agent.

Import the submodules directly (``tensorguard.fleet.registry``, ``.db``, ``.mqtt``,
``.agent``); this package does not re-export them, so an edge device that only runs
the agent never imports the database layer and a publisher never imports MQTT.
"""
