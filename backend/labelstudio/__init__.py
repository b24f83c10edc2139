"""The Label Studio edge: its API client, image references, label configs and JSON."""
