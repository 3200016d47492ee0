"""FreeSWITCH mod_httapi adapter: a pure codec (codec.py) and a thin HTTP transport."""
