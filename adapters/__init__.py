"""PBX and client adapters: one package per switch, each a pure codec plus a thin transport."""
