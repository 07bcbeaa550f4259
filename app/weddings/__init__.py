"""Weddings: create, read, update, members and roles (routes), and the rows behind them (store)."""
