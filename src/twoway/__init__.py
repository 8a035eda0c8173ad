"""twoway: persistent, bi-directional TCP services."""
