"""Webhook delivery (sender side) and a verification helper for Python receivers (CONTRACT §4)."""
