"""Operating the service: the HTTP API, the report documents it and the CLI share, plots, tail.

These read the database (and the running daemon's hooks); nothing in the live loop imports them
except the service starting the API.
"""
