"""Pydantic contracts shared by the API, activities and workflows. Imports no ORM."""
