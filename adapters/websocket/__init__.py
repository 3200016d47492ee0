"""Websocket clients: many calls over one socket, JSON text frames (docs/websocket.md)."""
