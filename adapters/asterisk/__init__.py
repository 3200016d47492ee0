"""Asterisk through ARI: an events websocket in, REST calls out, prompts as gateway audio."""
