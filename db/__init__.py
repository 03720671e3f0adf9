"""Storage layer: schema, migrations and data access. Imports neither `daemon` nor `trainer`."""
