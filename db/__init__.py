"""Database: engine and sessions (engine.py), tables (models.py), migrations (migrations/)."""
