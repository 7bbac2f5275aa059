"""Real services (PostgreSQL, Mosquitto, SoftHSM2, Pebble) started by the test suite.

Each service runs from the installed Debian binaries on 127.0.0.1 and a free port, in
a temporary directory, and is stopped by PID when the test session ends.
"""
