"""Database: engine and sessions (engine.py), tables (models/, a module per domain),
migrations (migrations/)."""
