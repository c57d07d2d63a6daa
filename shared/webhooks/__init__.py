"""Webhook delivery: signing and POSTing each recorded event (docs/webhooks.md)."""
