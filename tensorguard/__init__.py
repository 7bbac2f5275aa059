"""tensorguard package."""
