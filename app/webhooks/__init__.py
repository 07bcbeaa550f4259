"""Wedding webhooks over HTTP: register, list, rotate, delete, and their delivery log."""
