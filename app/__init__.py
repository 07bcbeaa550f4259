"""The HTTP + WebSocket edge (Litestar), the CLI and the embedded runtime."""
