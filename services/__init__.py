"""Business logic shared by the API, the dispatcher and activities. Services never commit."""
