"""tensorguard_assets package."""
