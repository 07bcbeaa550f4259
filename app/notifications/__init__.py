"""Notification inboxes, preferences and push subscriptions over HTTP."""
