"""Tests of the fleet service against a real ``tensorguard serve`` on loopback."""
