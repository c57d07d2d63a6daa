"""Pydantic models at every boundary: builds, plans, tasks, events."""
